"""benchmarks/same_outputs.py: the comparison of two runs' outputs (the git and subprocess part is
what a restructuring's proof runs; here the comparison it reports)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import same_outputs as S  # noqa: E402


def write(root, rel, data):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def test_compare_counts_identical_different_and_one_sided_files(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for root in (a, b):
        write(root, "configs/tv__x.yaml", "A: 1\n")
        write(root, "predict/s1.png", b"\x89PNG same")
        write(root, "predict/predict.log", f"took {root}")  # logs are never compared
        write(root, "eval_only/log.txt", root)
    write(a, "predict/s1.json", json.dumps({"calls": [{"class": "1", "score": 0.9}], "method": "DeepACC"}))
    write(b, "predict/s1.json", json.dumps({"calls": [{"class": "1", "score": 0.9}], "method": "Faster R-CNN"}))
    write(a, "eval/metrics_deepacc.json", json.dumps({"agnostic": {"AP50": 69.5}}))
    write(b, "eval/metrics_deepacc.json", json.dumps({"agnostic": {"AP50": 89.6, "AP50_before_nms": 69.5}}))
    write(a, "eval_tables.txt", "| x |\n")
    write(b, "eval_tables.txt", "| x |\n")
    write(b, "predict/new.json", "{}")
    kinds = S.compare(a, b)
    assert kinds["configs"]["identical"] == 1 and not kinds["configs"]["different"]
    assert kinds["eval_tables"]["identical"] == 1
    p = kinds["predict"]
    assert p["identical"] == 1 and p["only_after"] == [os.path.join("predict", "new.json")] and not p["only_before"]
    assert p["different"] == [{"file": os.path.join("predict", "s1.json"),
                               "keys": [("method", '"DeepACC"', '"Faster R-CNN"')]}]
    e = kinds["eval"]["different"][0]["keys"]
    assert e == [("agnostic.AP50", "69.5", "89.6"), ("agnostic.AP50_before_nms", "(absent)", "69.5")]
    assert "eval_only" not in kinds  # its log.txt is not an output
    text = S.report("cmd", {"before": "a1", "after": "b2"}, {}, kinds)
    assert "| predict | 1 | 1 | 0 | 1 |" in text and "`method`: `\"DeepACC\"` -> `\"Faster R-CNN\"`" in text


def test_json_differences_walks_lists_and_shortens_values():
    d = S.json_differences({"a": [1, 2, {"b": "x" * 100}]}, {"a": [1, 3, {"b": "y"}]})
    assert d[0] == ("a[1]", "2", "3")
    assert d[1][0] == "a[2].b" and d[1][1].endswith("...") and len(d[1][1]) == 60
    assert S.json_differences({"a": [1]}, {"a": [1, 2]}) == [("a", "[1]", "[1, 2]")]
    assert S.table_lines("took 3 s\n| a | b |\n|---|\nend") == "| a | b |\n|---|\n"


def test_usage_errors_are_named(tmp_path, capsys):
    rc = S.main(["--before", "HEAD", "--config", str(tmp_path / "no.yaml"), "--weights", str(tmp_path / "w.pth"),
                 "--inputs", str(tmp_path), "--gt", str(tmp_path / "gt.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--config" in err and "no.yaml" in err and "--weights" in err and "--gt" in err
    assert "--inputs" not in err  # that folder exists
