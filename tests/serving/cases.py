"""Bad requests shared by the protocol unit tests and the server tests.
Each case is ``(id, content type, body, error)``: the body must be answered 400 with
``{"error": error, "code": 400}``, the message naming the rule broken. Input names are
``x1, x2``.
"""

from __future__ import annotations

JSON = "application/json"
CSV = "text/csv"
# Bodies too long to write out.
BIG = {
    "deep-nesting": '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}",
    "deep-nesting-objects": '{"a":' * 40 + "1" + "}" * 40,
    "deep-unterminated": "[" * 100000,
    "long-integer": '{"inputs": [[1' + "0" * 5000 + ", 0.2]]}",
    "integer-overflows-float": '{"inputs": [[1' + "0" * 399 + ", 0.2]]}",
    "csv-long-integer": "0.1,1" + "0" * 400 + "\n",
    "csv-integer-overflows-float": "0.1,1" + "0" * 399 + "\n",
    # A cell of digits and a letter: the pattern that once backtracked quadratically.
    "csv-slow-pattern-cell": "0.1," + "1" * 100_000 + "a\n",
    "csv-slow-pattern-header": "1" * 100_000 + "a,x2\n0.1,0.2\n",
}

BAD_JSON = [
    (
        "malformed",
        '{"inputs": [[0.1, 0.2]',
        "malformed JSON: Expecting ',' delimiter at line 1 column 23; expected an object like {\"inputs\": [[...], ...]} or a list of points",
    ),
    (
        "trailing-garbage",
        '{"inputs": [[0.1, 0.2]]} x',
        'malformed JSON: Extra data at line 1 column 26; expected an object like {"inputs": [[...], ...]} or a list of points',
    ),
    ("empty-body", "", "expected a JSON body, got an empty body"),
    (
        "too-many-inputs",
        '{"inputs": [[0.1, 0.2, 0.3]]}',
        "inputs[0]: expected 2 numbers (inputs ['x1', 'x2']), got 3",
    ),
    (
        "too-few-inputs",
        '{"inputs": [[0.1]]}',
        "inputs[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1",
    ),
    (
        "ragged",
        '{"inputs": [[0.1, 0.2], [0.3]]}',
        "inputs[1]: expected 2 numbers (inputs ['x1', 'x2']), got 1",
    ),
    (
        "string",
        '{"inputs": [["a", 0.2]]}',
        'inputs[0][0] (x1): expected a finite number, got a string ("a")',
    ),
    (
        "numeric-string",
        '{"inputs": [["0.1", 0.2]]}',
        'inputs[0][0] (x1): expected a finite number, got a string ("0.1")',
    ),
    (
        "boolean",
        '{"inputs": [[true, 0.2]]}',
        "inputs[0][0] (x1): expected a finite number, got a boolean (true)",
    ),
    (
        "null-number",
        '{"inputs": [[null, 0.2]]}',
        "inputs[0][0] (x1): expected a finite number, got null",
    ),
    ("null-inputs", '{"inputs": null}', "inputs: expected a list of points, got null"),
    (
        "nan-literal",
        '{"inputs": [[NaN, 0.2]]}',
        "invalid JSON number NaN: expected finite numbers, got the literal NaN",
    ),
    (
        "infinity-literal",
        '{"inputs": [[0.1, Infinity]]}',
        "invalid JSON number Infinity: expected finite numbers, got the literal Infinity",
    ),
    (
        "minus-infinity-literal",
        '{"inputs": [[-Infinity, 0.2]]}',
        "invalid JSON number -Infinity: expected finite numbers, got the literal -Infinity",
    ),
    (
        "overflow-to-infinity",
        '{"inputs": [[1e999, 0.2]]}',
        "inputs[0][0] (x1): expected a finite number, got one beyond the float64 range (inf)",
    ),
    ("empty-inputs", '{"inputs": []}', "inputs: expected at least one point, got an empty list"),
    ("empty-list", "[]", "body: expected at least one point, got an empty list"),
    ("empty-object", "{}", "expected exactly one of the keys ['inputs', 'instances'], got []"),
    ("scalar-inputs", '{"inputs": 0.5}', "inputs: expected a list of points, got a number (0.5)"),
    (
        "scalar-body",
        "0.5",
        'expected a JSON object like {"inputs": [[...], ...]} or a list of points, got a number (0.5)',
    ),
    (
        "string-body",
        '"x"',
        'expected a JSON object like {"inputs": [[...], ...]} or a list of points, got a string ("x")',
    ),
    (
        "null-body",
        "null",
        'expected a JSON object like {"inputs": [[...], ...]} or a list of points, got null',
    ),
    (
        "flat-list",
        '{"inputs": [0.1, 0.2]}',
        "inputs: expected a list of points (a list of lists), got a flat list of 2 numbers; send one point as [[...]]",
    ),
    (
        "three-levels",
        '{"inputs": [[[0.1, 0.2]]]}',
        "inputs[0][0]: expected a number (points nest one level deep: [[x1, x2], ...]), got a list of 2 items",
    ),
    (
        "unknown-covariance",
        '{"inputs": [[0.1, 0.2]], "covariance": "partial"}',
        "covariance: expected one of ['full', 'diag', 'none'], got a string (\"partial\")",
    ),
    (
        "null-covariance",
        '{"inputs": [[0.1, 0.2]], "covariance": null}',
        "covariance: expected one of ['full', 'diag', 'none'], got null",
    ),
    (
        "noise-string",
        '{"inputs": [[0.1, 0.2]], "observation_noise": "yes"}',
        'observation_noise: expected true or false, got a string ("yes")',
    ),
    (
        "noise-number",
        '{"inputs": [[0.1, 0.2]], "observation_noise": 1}',
        "observation_noise: expected true or false, got a number (1)",
    ),
    (
        "unknown-key",
        '{"inputs": [[0.1, 0.2]], "covarience": "diag"}',
        "unknown keys [\"covarience\"]: expected only 'inputs' and ['covariance', 'observation_noise', 'samples', 'base_samples', 'quantiles', 'acquisition', 'gradients']",
    ),
    (
        "two-envelopes",
        '{"inputs": [[0.1, 0.2]], "instances": [[0.1, 0.2]]}',
        "expected exactly one of the keys ['inputs', 'instances'], got [\"inputs\", \"instances\"]",
    ),
    (
        "named-missing",
        '{"inputs": [{"x1": 0.1}]}',
        "inputs[0]: expected an object with exactly the inputs ['x1', 'x2'], got unknown [] and missing ['x2']",
    ),
    (
        "named-unknown",
        '{"inputs": [{"x1": 0.1, "x2": 0.2, "x3": 0.3}]}',
        "inputs[0]: expected an object with exactly the inputs ['x1', 'x2'], got unknown [\"x3\"] and missing []",
    ),
    (
        "named-string",
        '{"inputs": [{"x1": 0.1, "x2": "b"}]}',
        'inputs[0].x2: expected a finite number, got a string ("b")',
    ),
    (
        "kserve-wrong-inputs",
        '{"instances": [[0.1]]}',
        "instances[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1",
    ),
    (
        "kserve-empty",
        '{"instances": []}',
        "instances: expected at least one point, got an empty list",
    ),
    (
        "bare-ragged",
        "[[0.1, 0.2], [0.3, 0.4, 0.5]]",
        "body[1]: expected 2 numbers (inputs ['x1', 'x2']), got 3",
    ),
    (
        "deep-nesting",
        BIG["deep-nesting"],
        "JSON nested 5001 levels deep: expected at most 32 levels",
    ),
    (
        "deep-nesting-objects",
        BIG["deep-nesting-objects"],
        "JSON nested 40 levels deep: expected at most 32 levels",
    ),
    (
        "deep-unterminated",
        BIG["deep-unterminated"],
        "JSON nested 100000 levels deep: expected at most 32 levels",
    ),
    (
        "long-integer",
        BIG["long-integer"],
        "a JSON integer of 5001 digits: expected at most 400 digits",
    ),
    (
        "integer-overflows-float",
        BIG["integer-overflows-float"],
        "inputs[0][0] (x1): expected a finite number, got an integer that overflows a float64",
    ),
    (
        "exponent-overflow",
        '{"inputs": [[1e400, 0.2]]}',
        "inputs[0][0] (x1): expected a finite number, got one beyond the float64 range (inf)",
    ),
    (
        "lone-surrogate-key",
        '{"inputs": [[0.1, 0.2]], "\\ud800": 1}',
        "unknown keys [\"\\ud800\"]: expected only 'inputs' and ['covariance', 'observation_noise', 'samples', 'base_samples', 'quantiles', 'acquisition', 'gradients']",
    ),
    (
        "unicode-value",
        '{"inputs": [[0.1, "é☃"]]}',
        'inputs[0][1] (x2): expected a finite number, got a string ("\\u00e9\\u2603")',
    ),
    (
        "truncated",
        '{"inputs": [[0.1, 0.',
        "malformed JSON: Expecting ',' delimiter at line 1 column 20; expected an object like {\"inputs\": [[...], ...]} or a list of points",
    ),
    (
        "bom-then-garbage",
        "\ufeff{x}",
        'malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2; expected an object like {"inputs": [[...], ...]} or a list of points',
    ),
]

BAD_CSV = [
    (
        "csv-letters",
        "x1,x2\n0.1,abc\n",
        "CSV line 2, column x2: expected a finite number, got 'abc'",
    ),
    ("csv-short-row", "0.1,0.2\n0.3\n", "CSV line 2: expected 2 values (x1,x2), got 1"),
    ("csv-long-row", "0.1,0.2\n0.3,0.4,0.5\n", "CSV line 2: expected 2 values (x1,x2), got 3"),
    (
        "csv-unknown-header",
        "x1,x3\n0.1,0.2\n",
        "CSV header: expected the input names ['x1', 'x2'] (in any order), got ['x1', 'x3']",
    ),
    (
        "csv-duplicate-header",
        "x1,x1\n0.1,0.2\n",
        "CSV header: expected the input names ['x1', 'x2'] (in any order), got ['x1', 'x1']",
    ),
    ("csv-header-only", "x1,x2\n", "CSV: expected at least one data row, got none"),
    ("csv-empty", "", "CSV: expected at least one data row, got none"),
    ("csv-nan", "0.1,nan\n", "CSV line 1, column x2: expected a finite number, got 'nan'"),
    ("csv-inf", "inf,0.2\n", "CSV line 1, column x1: expected a finite number, got 'inf'"),
    (
        "csv-semicolons",
        "0.1;0.2\n",
        "CSV line 1: expected 2 values (x1,x2), got 1 (the separator must be a comma)",
    ),
    ("csv-empty-cell", "0.1,\n", "CSV line 1, column x2: expected a finite number, got ''"),
    ("csv-underscore", "1_0,0.2\n", "CSV line 1, column x1: expected a finite number, got '1_0'"),
    (
        "csv-trailing-separator",
        "x1,x2\n0.1,0.2,\n",
        "CSV line 2: expected 2 values (x1,x2), got 3 (empty cells after the last value: a trailing separator?)",
    ),
    (
        "csv-quoted-text",
        'x1,x2\n"0.1","a"\n',
        "CSV line 2, column x2: expected a finite number, got 'a'",
    ),
    (
        "csv-unclosed-quote",
        'x1,x2\n"0.1,0.2\n',
        "CSV line 2: unparsable (unexpected end of data): expected comma-separated cells with every quote closed",
    ),
    (
        "csv-blank-lines-then-bad",
        "x1,x2\n\n\n0.1,0.2\n\n0.3,oops\n",
        "CSV line 6, column x2: expected a finite number, got 'oops'",
    ),
    (
        "csv-crlf-bad",
        "x1,x2\r\n0.1,0.2\r\n0.3,x\r\n",
        "CSV line 3, column x2: expected a finite number, got 'x'",
    ),
    (
        "csv-long-integer",
        BIG["csv-long-integer"],
        "CSV line 1, column x2: a cell of 401 characters: expected a number of at most 400 characters, got '1000000000000000000000000000000000000... (401 characters)'",
    ),
    (
        "csv-integer-overflows-float",
        BIG["csv-integer-overflows-float"],
        "CSV line 1, column x2: expected a finite number, got '1000000000000000000000000000000000000...'",
    ),
    (
        "csv-slow-pattern-cell",
        BIG["csv-slow-pattern-cell"],
        "CSV line 1, column x2: a cell of 100001 characters: expected a number of at most 400 characters, got '1111111111111111111111111111111111111... (100001 characters)'",
    ),
    (
        "csv-slow-pattern-header",
        BIG["csv-slow-pattern-header"],
        "CSV header: expected the input names ['x1', 'x2'] (in any order), got ['1111111111111111111111111111111111111... (100001 characters)', 'x2']",
    ),
]

BAD_REQUESTS = [(name, JSON, body, error) for name, body, error in BAD_JSON] + [
    (name, CSV, body, error) for name, body, error in BAD_CSV
]
