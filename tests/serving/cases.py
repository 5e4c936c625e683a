"""Bad requests shared by the parser unit tests and the server tests.

Each case is ``(id, content type, body)``; every one must be answered 400 with
``{"error": ..., "code": 400}``. Input names are ``x1, x2``.
"""

from __future__ import annotations

JSON = "application/json"
CSV = "text/csv"

BAD_JSON = [
    ("malformed", '{"inputs": [[0.1, 0.2]'),
    ("trailing-garbage", '{"inputs": [[0.1, 0.2]]} x'),
    ("empty-body", ""),
    ("too-many-inputs", '{"inputs": [[0.1, 0.2, 0.3]]}'),
    ("too-few-inputs", '{"inputs": [[0.1]]}'),
    ("ragged", '{"inputs": [[0.1, 0.2], [0.3]]}'),
    ("string", '{"inputs": [["a", 0.2]]}'),
    ("numeric-string", '{"inputs": [["0.1", 0.2]]}'),
    ("boolean", '{"inputs": [[true, 0.2]]}'),
    ("null-number", '{"inputs": [[null, 0.2]]}'),
    ("null-inputs", '{"inputs": null}'),
    ("nan-literal", '{"inputs": [[NaN, 0.2]]}'),
    ("infinity-literal", '{"inputs": [[0.1, Infinity]]}'),
    ("minus-infinity-literal", '{"inputs": [[-Infinity, 0.2]]}'),
    ("overflow-to-infinity", '{"inputs": [[1e999, 0.2]]}'),
    ("empty-inputs", '{"inputs": []}'),
    ("empty-list", "[]"),
    ("empty-object", "{}"),
    ("scalar-inputs", '{"inputs": 0.5}'),
    ("scalar-body", "0.5"),
    ("string-body", '"x"'),
    ("null-body", "null"),
    ("flat-list", '{"inputs": [0.1, 0.2]}'),
    ("three-levels", '{"inputs": [[[0.1, 0.2]]]}'),
    ("unknown-covariance", '{"inputs": [[0.1, 0.2]], "covariance": "partial"}'),
    ("null-covariance", '{"inputs": [[0.1, 0.2]], "covariance": null}'),
    ("noise-string", '{"inputs": [[0.1, 0.2]], "observation_noise": "yes"}'),
    ("noise-number", '{"inputs": [[0.1, 0.2]], "observation_noise": 1}'),
    ("unknown-key", '{"inputs": [[0.1, 0.2]], "covarience": "diag"}'),
    ("two-envelopes", '{"inputs": [[0.1, 0.2]], "instances": [[0.1, 0.2]]}'),
    ("named-missing", '{"inputs": [{"x1": 0.1}]}'),
    ("named-unknown", '{"inputs": [{"x1": 0.1, "x2": 0.2, "x3": 0.3}]}'),
    ("named-string", '{"inputs": [{"x1": 0.1, "x2": "b"}]}'),
    ("kserve-wrong-inputs", '{"instances": [[0.1]]}'),
    ("kserve-empty", '{"instances": []}'),
    ("bare-ragged", "[[0.1, 0.2], [0.3, 0.4, 0.5]]"),
]

BAD_CSV = [
    ("csv-letters", "x1,x2\n0.1,abc\n"),
    ("csv-short-row", "0.1,0.2\n0.3\n"),
    ("csv-long-row", "0.1,0.2\n0.3,0.4,0.5\n"),
    ("csv-unknown-header", "x1,x3\n0.1,0.2\n"),
    ("csv-duplicate-header", "x1,x1\n0.1,0.2\n"),
    ("csv-header-only", "x1,x2\n"),
    ("csv-empty", ""),
    ("csv-nan", "0.1,nan\n"),
    ("csv-inf", "inf,0.2\n"),
    ("csv-semicolons", "0.1;0.2\n"),
    ("csv-empty-cell", "0.1,\n"),
    ("csv-underscore", "1_0,0.2\n"),
]

BAD_REQUESTS = [(name, JSON, body) for name, body in BAD_JSON] + [
    (name, CSV, body) for name, body in BAD_CSV
]
