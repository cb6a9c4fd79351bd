"""The HTTP service, as a client sees it: a real uvicorn server on 127.0.0.1 in a subprocess,
answers like the Python API, refuses every kind of bad input with a 4xx and a JSON message and
keeps serving, batches concurrent requests, and takes new items on an inductive model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tiny import write_tiny_domain
from tolerances import assert_close

import mmseqrec
from finetune.cli import main as finetune_main
from mmseqrec.serve_check import Client, ServerProcess, check_refused, malformed_requests

MAX_HISTORY = 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    write_tiny_domain(root / "data")
    code = finetune_main(["--domain", "Tiny", "--data-dir", str(root / "data"), "--model", "sasrec,unisrec@scratch", "--mode", "inductive",
                          "--output", str(root / "runs"), "--quiet", "train.epochs=1", "model.hidden_size=16", "model.inner_size=16"])
    assert code == 0
    return root / "data", root / "runs"


@pytest.mark.slow
def test_the_service_answers_refuses_and_keeps_serving(trained, tmp_path):
    data, runs = trained
    run = runs / "sasrec-seed2020"
    expected = mmseqrec.load(run, data_dir=data).recommend([["I3", "I4"], ["I10"]], k=5)
    args = ["--run", str(run), "--data-dir", str(data), "--cpu", "--max-history", str(MAX_HISTORY), "--max-wait-ms", "20"]
    with ServerProcess(args, log=tmp_path / "server.log") as server:
        client = Client(server.port)
        assert client.call("GET", "/health")[:2] == (200, {"status": "ok"})
        status, meta, _ = client.call("GET", "/metadata")
        assert status == 200 and meta["model_type"] == "sasrec" and meta["domain"] == "Tiny" and meta["items"] == 40
        assert meta["users"] == 80 and meta["limits"]["max_history"] == MAX_HISTORY and {"mmseqrec", "torch"} <= set(meta["versions"])

        status, body, _ = client.call("POST", "/recommend", {"history": ["I3", "I4"], "k": 5})
        assert status == 200 and body["items"] == expected[0].items
        assert_close(np.array(body["scores"]), np.array(expected[0].scores), "scores over HTTP")
        status, body, _ = client.call("POST", "/recommend", {"history": ["I3", "I4"], "k": 40, "exclude_seen": False})
        assert status == 200 and len(body["items"]) == 40 and {"I3", "I4"} <= set(body["items"])

        # bad input of every kind, several rounds: a 4xx with a JSON message each time
        kinds = malformed_requests("I3", MAX_HISTORY)
        assert len({bad.kind for bad in kinds}) >= 10
        failures = [problem for _ in range(3) for bad in kinds if (problem := check_refused(client, bad))]
        assert not failures, failures
        status, body, _ = client.call("POST", "/recommend", {"history": ["I3", "nope"]})
        assert status == 422 and body["unknown_items"] == ["nope"] and "nope" in body["error"]
        status, body, _ = client.call("POST", "/recommend", {"history": ["I3"] * (MAX_HISTORY + 1)})
        assert status == 422 and f"the limit is {MAX_HISTORY}" in body["error"]
        status, body, _ = client.call("POST", "/items", {"items": [{"id": "NEW", "text": "x"}]})
        assert status == 409 and "ID embedding" in body["error"]

        # still serving, and answering right
        assert client.call("GET", "/health")[0] == 200
        assert client.call("POST", "/recommend", {"history": ["I10"], "k": 5})[1]["items"] == expected[1].items

        # concurrent requests are scored together and each gets its own answer
        histories = [[f"I{1 + i % 40}", f"I{1 + (i * 7) % 40}"] for i in range(48)]
        alone = mmseqrec.load(run, data_dir=data).recommend(histories, k=3)

        def ask(history):
            return Client(server.port).call("POST", "/recommend", {"history": history, "k": 3})

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(ask, histories))
        assert all(status == 200 for status, _, _ in answers)
        assert [body["items"] for _, body, _ in answers] == [r.items for r in alone]
        batching = client.call("GET", "/metadata")[1]["batching"]
        assert batching["requests"] == 48 + 3 and batching["batches"] < batching["requests"], batching
    assert server.process.returncode is not None


@pytest.mark.slow
def test_the_service_takes_new_items_on_an_inductive_model(trained, tmp_path):
    data, runs = trained
    import shutil

    run = Path(shutil.copytree(runs / "unisrec-scratch-seed2020", tmp_path / "run"))
    twin = mmseqrec.load(run, data_dir=data).domain.features["text"].values[7].tolist()  # item I7's text vector
    with ServerProcess(["--run", str(run), "--data-dir", str(data), "--cpu"], log=tmp_path / "server.log") as server:
        client = Client(server.port)
        status, body, _ = client.call("POST", "/items", {"items": [{"id": "NEW-7", "features": {"text": twin}}]})
        assert status == 200 and body == {"added": ["NEW-7"], "items": 41}
        status, body, _ = client.call("POST", "/items", {"items": [{"id": "NEW-7", "features": {"text": twin}}]})
        assert status == 422 and "already in the catalogue" in body["error"]
        status, body, _ = client.call("POST", "/recommend", {"history": ["I1", "NEW-7"], "k": 41, "exclude_seen": False})
        assert status == 200 and "NEW-7" in body["items"]
        assert abs(body["items"].index("NEW-7") - body["items"].index("I7")) == 1
    assert mmseqrec.load(run, data_dir=data).item_raw_ids[-1] == "NEW-7"  # stored with the run
