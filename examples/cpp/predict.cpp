// predict: evaluate an exported gp-serve posterior from C++, without Python.
//
//   predict <artifact_dir> [--method forward|forward_noisy|mean_var|mean_var_noisy] < points.csv
//
// Loads <artifact_dir>/posterior.pt2 (an AOTInductor package holding one compiled model per
// method) and <artifact_dir>/metadata.json, reads one point per line from stdin as d
// comma-separated numbers (the columns of metadata's input_names, in order; blank lines are
// skipped), and prints one JSON object on stdout:
//
//   {"method": ..., "input_names": [...], "output_names": [...],
//    "mean": [[q x m]], "variance": [[q x m]]}          (mean_var, mean_var_noisy)
//    "mean": [[q x m]], "covariance": [[qm x qm]]}      (forward, forward_noisy)
//
// The covariance is output-major: entry t*q + i is output t at point i. Every number is
// printed with %.17g, so it reads back as the same float64.
//
// A compiled package does not check its input: a float32 tensor, a wrong number of columns
// or an empty batch are undefined behaviour, not errors. This program is that check. Exit
// status: 0 on success, 2 for bad usage or input (the message on stderr), 1 for an artifact
// that cannot be read, loaded or run.

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// The methods every artifact format holds (handler/gp_artifact.py: METHODS); in a .pt2
// package each is a model of that name.
constexpr std::array<const char*, 4> kMethods = {
    "forward", "forward_noisy", "mean_var", "mean_var_noisy"};

// Bad usage or input: reported on stderr with exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read " + path);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The raw (still JSON-escaped) elements of the array of strings under `key` in a
// metadata.json document. Deliberately not a general JSON parser: the contract guarantees
// that both name lists are flat arrays of strings, and keeping the escapes lets the names be
// written back out verbatim.
std::vector<std::string> string_array(const std::string& json, const std::string& key) {
  const std::string quoted = "\"" + key + "\"";
  size_t pos = 0;
  while ((pos = json.find(quoted, pos)) != std::string::npos) {
    pos = json.find_first_not_of(" \t\r\n", pos + quoted.size());
    if (pos != std::string::npos && json[pos] == ':') {
      break;  // a key, not a string value that happens to read the same
    }
  }
  if (pos == std::string::npos) {
    throw std::runtime_error("metadata.json: no key \"" + key + "\"");
  }
  pos = json.find_first_not_of(" \t\r\n", pos + 1);
  if (pos == std::string::npos || json[pos] != '[') {
    throw std::runtime_error("metadata.json: \"" + key + "\" is not an array");
  }
  std::vector<std::string> items;
  for (++pos;;) {
    pos = json.find_first_not_of(" \t\r\n,", pos);
    if (pos == std::string::npos) {
      break;
    }
    if (json[pos] == ']') {
      if (items.empty()) {
        break;
      }
      return items;
    }
    if (json[pos] != '"') {
      break;
    }
    size_t end = pos + 1;
    while (end < json.size() && json[end] != '"') {
      end += json[end] == '\\' ? 2 : 1;
    }
    if (end >= json.size()) {
      break;
    }
    items.push_back(json.substr(pos + 1, end - pos - 1));
    pos = end + 1;
  }
  throw std::runtime_error("metadata.json: \"" + key + "\" is not a non-empty array of strings");
}

// Reads the points, one per line, as a row-major q x d array (d = names.size()); throws
// UsageError naming the line of the first bad field.
std::vector<double> read_points(std::istream& in, const std::vector<std::string>& names,
                                size_t& q) {
  const size_t d = names.size();
  std::vector<double> values;
  std::string line;
  q = 0;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    }
    size_t columns = 0;
    for (size_t start = 0; start != std::string::npos; ++columns) {
      const size_t comma = line.find(',', start);
      const std::string field = line.substr(start, comma - start);  // to the end if npos
      start = comma == std::string::npos ? comma : comma + 1;
      const char* begin = field.c_str();
      char* end = nullptr;
      const double value = std::strtod(begin, &end);
      while (*end == ' ' || *end == '\t' || *end == '\r') {
        ++end;
      }
      if (end == begin || *end != '\0' || !std::isfinite(value)) {
        throw UsageError("line " + std::to_string(line_no) + ", column " +
                         std::to_string(columns + 1) + ": expected a finite number, got \"" +
                         field + "\"");
      }
      values.push_back(value);
    }
    if (columns != d) {
      std::string expected;
      for (const std::string& name : names) {
        expected += (expected.empty() ? "" : ", ") + name;
      }
      throw UsageError("line " + std::to_string(line_no) + ": expected " + std::to_string(d) +
                       " columns (" + expected + "), got " + std::to_string(columns));
    }
    ++q;
  }
  if (q == 0) {
    throw UsageError("no points on stdin: expected at least one line of " + std::to_string(d) +
                     " comma-separated numbers");
  }
  return values;
}

// What the compiled model assumes and does not check: a float64, contiguous, CPU q x d
// tensor with q >= 1.
void check_input(const at::Tensor& X, int64_t d) {
  if (X.scalar_type() != at::kDouble || X.dim() != 2 || X.size(1) != d || X.size(0) < 1 ||
      !X.is_contiguous() || !X.device().is_cpu()) {
    throw std::logic_error("X must be a contiguous float64 CPU tensor of shape q x " +
                           std::to_string(d));
  }
}

void check_output(const at::Tensor& t, int64_t rows, int64_t cols, const char* what) {
  if (t.scalar_type() != at::kDouble || t.dim() != 2 || t.size(0) != rows ||
      t.size(1) != cols) {
    throw std::runtime_error(std::string("the model's ") + what + " is not a float64 " +
                             std::to_string(rows) + " x " + std::to_string(cols) +
                             " tensor: does metadata.json belong to this posterior.pt2?");
  }
}

void print_names(const char* key, const std::vector<std::string>& names) {
  std::printf("\"%s\": [", key);
  for (size_t i = 0; i < names.size(); ++i) {
    std::printf("%s\"%s\"", i ? ", " : "", names[i].c_str());
  }
  std::printf("]");
}

// A 2-D tensor as a JSON array of rows; a non-finite entry (not valid JSON) prints as null.
void print_matrix(const char* key, const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const double* data = c.data_ptr<double>();
  const int64_t rows = c.size(0), cols = c.size(1);
  std::printf("\"%s\": [", key);
  for (int64_t i = 0; i < rows; ++i) {
    std::printf("%s[", i ? ", " : "");
    for (int64_t j = 0; j < cols; ++j) {
      const double v = data[i * cols + j];
      if (std::isfinite(v)) {
        std::printf("%s%.17g", j ? ", " : "", v);
      } else {
        std::printf("%snull", j ? ", " : "");
      }
    }
    std::printf("]");
  }
  std::printf("]");
}

int usage() {
  std::fprintf(stderr,
               "usage: predict <artifact_dir> [--method forward|forward_noisy|mean_var|"
               "mean_var_noisy] < points.csv\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, method = "mean_var";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--method" && i + 1 < argc) {
      method = argv[++i];
    } else if (arg.rfind("--method=", 0) == 0) {
      method = arg.substr(9);
    } else if (arg == "-h" || arg == "--help" || !dir.empty() || arg.rfind("--", 0) == 0) {
      return usage();
    } else {
      dir = arg;
    }
  }
  bool known = false;
  for (const char* m : kMethods) {
    known = known || method == m;
  }
  if (dir.empty() || !known) {
    if (!known) {
      std::fprintf(stderr, "predict: unknown method \"%s\"\n", method.c_str());
    }
    return usage();
  }

  try {
    const std::string metadata = read_file(dir + "/metadata.json");
    const std::vector<std::string> inputs = string_array(metadata, "input_names");
    const std::vector<std::string> outputs = string_array(metadata, "output_names");
    const int64_t d = static_cast<int64_t>(inputs.size());
    const int64_t m = static_cast<int64_t>(outputs.size());
    // (The loader reports a missing file only as "Failed to initialize zip archive".)
    const std::string package = dir + "/posterior.pt2";
    if (!std::ifstream(package)) {
      throw std::runtime_error("cannot read " + package +
                               " (export with: python -m export --format torchscript,pt2)");
    }

    size_t rows = 0;
    std::vector<double> values = read_points(std::cin, inputs, rows);
    const int64_t q = static_cast<int64_t>(rows);
    // A view of `values`, which outlives every use of X.
    const at::Tensor X = at::from_blob(values.data(), {q, d}, at::kDouble);
    check_input(X, d);

    // The package holds one model per method; model_name picks which one is loaded.
    torch::inductor::AOTIModelPackageLoader loader(package, method);
    const std::vector<at::Tensor> result = loader.run({X});
    if (result.size() != 2) {
      throw std::runtime_error("the model returned " + std::to_string(result.size()) +
                               " tensors, expected 2");
    }
    const bool full = method.rfind("forward", 0) == 0;
    check_output(result[0], q, m, "mean");
    check_output(result[1], full ? q * m : q, full ? q * m : m, full ? "covariance" : "variance");

    std::printf("{\"method\": \"%s\", ", method.c_str());
    print_names("input_names", inputs);
    std::printf(", ");
    print_names("output_names", outputs);
    std::printf(", ");
    print_matrix("mean", result[0]);
    std::printf(", ");
    print_matrix(full ? "covariance" : "variance", result[1]);
    std::printf("}\n");
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "predict: %s\n", e.what());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "predict: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "predict: %s\n", e.what());
    return 1;
  }
}
