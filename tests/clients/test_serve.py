"""clients/serve.py, started as a user starts it (with TensorFlow made
unimportable) on a free port of 127.0.0.1: the answers of useModel.py
--json, one-line refusals of bad requests after which it goes on serving,
and a burst of concurrent requests run in batches."""
import concurrent.futures
import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

from helpers import (JPEG_IMAGES, cut_jpeg, encoded, finish, free_ports, noise, png,
                     use_model_probabilities, without_tensorflow)
from suite.model.manifest import load_manifest

pytestmark = pytest.mark.slow  # each test starts a server


@contextlib.contextmanager
def serving(model, folder, *flags):
    """clients/serve.py MODEL FLAGS running until the block ends: its base URL."""
    port = free_ports(1)[0]
    log = open(os.path.join(folder, f"serve-{port}.log"), "w+")
    process = subprocess.Popen(without_tensorflow("serve.py", model, "--port", port, *flags),
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert process.poll() is None, _read(log)
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
                    assert json.load(answer)["status"] == "ok"
                break
            except OSError:
                assert time.time() < deadline, _read(log)
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        code, _, _ = finish(process, 30)
        text = _read(log)
        log.close()
    assert "Traceback" not in text, text
    # uvicorn shuts down cleanly on SIGTERM, then ends by the signal it caught
    assert code in (0, -15) and "Application shutdown complete" in text, text


def _read(log):
    log.seek(0)
    return log.read()


def post(url, body, content_type="image/jpeg", query=""):
    """(status, JSON document, headers) of POST /predict."""
    request = urllib.request.Request(f"{url}/predict{query}", data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers


def post_declared(url, length, content_type):
    """(status, JSON document, headers) of a POST /predict that declares a
    body of `length` bytes and sends none: the server answers from the
    declared length. (Sending the body too raced the server's early answer
    and close: the client could get a broken pipe before reading it.)"""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        answer = connection.getresponse()
        return answer.status, json.load(answer), answer.headers
    finally:
        connection.close()


def multipart(files):
    """(body, content type) of a multipart/form-data form with these (name, bytes) files."""
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
             f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
             + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_the_endpoint_answers_as_use_model(exported, colour_data, sample_images,
                                           trained_model, tmp_path):
    """Raw bodies (PNGs, JPEGs kept byte for byte) and one form of them all
    with a broken file among them: useModel.py's labels, probabilities within 1e-3."""
    image_dir, _ = colour_data
    jpeg_folder, _ = sample_images
    paths = [os.path.join(jpeg_folder, name) for name, _, _ in JPEG_IMAGES] + [
        os.path.join(image_dir, colour, f"00{index}.png")  # names unique: a table by name
        for index, colour in enumerate(("blue", "green", "red"), 5)]
    labels = load_manifest(trained_model)["labels"]
    expected = use_model_probabilities(paths, trained_model, labels)
    files = [(os.path.basename(p), open(p, "rb").read()) for p in paths]

    def check(result, name):
        assert result["label"] == labels[expected[name].argmax()], (name, result)
        assert len(result["predictions"]) == len(labels)
        for prediction in result["predictions"]:
            assert abs(prediction["probability"]
                       - expected[name][labels.index(prediction["label"])]) < 1e-3

    with serving(exported["onnx"], tmp_path) as url:
        for name, data in files:
            status, document, _ = post(url, data, "image/png" if name.endswith(".png")
                                       else "image/jpeg", f"?top_k={len(labels)}")
            assert status == 200, document
            assert document["model"] == "model.onnx" and document["precision"] == "fp32"
            assert [r["input"] for r in document["results"]] == ["body"]
            check(document["results"][0], name)
        body, content_type = multipart(files[:3] + [("broken.jpg", b"not an image")]
                                       + files[3:])
        status, document, _ = post(url, body, content_type, f"?top_k={len(labels)}")
        assert status == 200, document
        results = document["results"]
        assert [r["input"] for r in results] == \
            [n for n, _ in files[:3]] + ["broken.jpg"] + [n for n, _ in files[3:]]
        assert results[3] == {"input": "broken.jpg", "error": "not an image Pillow can read"}
        for result in results[:3] + results[4:]:
            check(result, result["input"])
        # The server's --threshold, and a query's: "unknown" below it.
        status, document, _ = post(url, files[0][1], query="?threshold=1&top_k=1")
        assert status == 200 and document["results"][0]["label"] == "unknown"
        assert len(document["results"][0]["predictions"]) == 1


def test_bad_requests_get_one_line_and_the_server_goes_on(exported, sample_images, tmp_path):
    jpeg_folder, images = sample_images
    good = images[JPEG_IMAGES[0][0]]
    no_file, no_file_type = multipart([])
    cases = [  # (body, content type, query, status, words of the line)
        (b"", "image/jpeg", "", 400, "the body is empty"),
        (b"GIF89a but not really", "image/gif", "", 400, "not an image"),
        (cut_jpeg(encoded(noise(200, 200), quality=95)), "image/jpeg", "", 400, "premature end"),
        (good, "text/plain", "", 415, "Content-Type text/plain is not an image"),
        (good, None, "", 415, "application/x-www-form-urlencoded"),  # urllib's default
        (2 << 20, "image/jpeg", "", 413, "over this server's 1,048,576"),  # declared only
        (png(2000, 1000), "image/png", "", 413, "2000x1000 pixels, over this server's"),
        (good, "image/jpeg", "?top_k=0", 400, "top_k must be 1 or more"),
        (good, "image/jpeg", "?threshold=x", 400, "threshold a number"),
        (no_file, no_file_type, "", 400, "the form has no file"),
        (*multipart([("a.jpg", b"")]), "", 400, "empty file"),
    ]
    with serving(exported["onnx"], tmp_path, "--max_mb", "1", "--max_megapixels", "1") as url:
        for body, content_type, query, status, words in cases:
            got, document, _ = (post_declared(url, body, content_type) if isinstance(body, int)
                                 else post(url, body, content_type, query))
            assert (got, list(document)) == (status, ["error"]), (words, document)
            assert words in document["error"] and "\n" not in document["error"], document
        # A form none of whose files can be read: the first one's refusal, and each answered.
        got, document, _ = post(url, *multipart([("a.jpg", b"not an image"),
                                                 ("b.png", png(2000, 1000))]))
        assert got == 400 and document["error"] == "not an image Pillow can read"
        assert [sorted(r) for r in document["results"]] == [["error", "input"]] * 2
        assert "over this server's" in document["results"][1]["error"]
        with pytest.raises(urllib.error.HTTPError, match="405"):
            urllib.request.urlopen(url + "/predict", timeout=10)
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert b'enctype="multipart/form-data"' in page.read()
        assert post(url, good)[0] == 200  # still serving


def test_a_burst_of_concurrent_requests_is_answered_in_batches(exported, sample_images,
                                                               tmp_path):
    _, images = sample_images
    bodies = [images[name] for name, _, _ in JPEG_IMAGES] * 8  # 72 requests
    with serving(exported["onnx"], tmp_path) as url:
        expected = {body: post(url, body)[1]["results"][0] for body in set(bodies)}
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda body: post(url, body), bodies))
        with urllib.request.urlopen(url + "/healthz", timeout=10) as answer:
            health = json.load(answer)
    assert [status for status, _, _ in answers] == [200] * len(bodies)
    for body, (_, document, _) in zip(bodies, answers):
        assert document["results"][0] == expected[body]
    runs = health["batches"] - len(expected)
    assert health["images"] == len(expected) + len(bodies)
    assert runs < len(bodies)  # batched: fewer runs than requests


def test_a_full_queue_and_a_slow_upload_are_refused(exported, sample_images, tmp_path):
    _, images = sample_images
    files = [(name, images[name]) for name, _, _ in JPEG_IMAGES]
    with serving(exported["onnx"], tmp_path, "--max_queue", "4", "--timeout", "1") as url:
        status, document, headers = post(url, *multipart(files))  # 9 images, room for 4
        assert status == 503 and "busy" in document["error"], document
        assert headers["Retry-After"] == "1"
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"image/jpeg\r\nContent-Length: 5000\r\n\r\n" + b"\xff" * 100)
            answer = b""
            while not answer.endswith(b"}"):  # the headers, then the JSON body
                chunk = connection.recv(4096)
                assert chunk, answer
                answer += chunk
            answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "did not arrive within 1 s" in answer
        assert post(url, files[0][1])[0] == 200
