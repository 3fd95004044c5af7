"""Serves the ONNX model of `useModel.py --export_onnx` over HTTP, without
TensorFlow.

    python clients/serve.py MODEL.onnx [--host 127.0.0.1] [--port 8080]
                            [--top_k 3] [--threshold P] [--max_batch 32]
                            [--max_wait_ms 5] [--max_queue 256] [--timeout 30]
                            [--max_mb 20] [--max_megapixels 40] [--threads N]
                            [--workers 1] [--access_log]

    curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg localhost:8080/predict
    curl -F image=@photo.jpg -F image=@other.png localhost:8080/predict

Needs clients/requirements-serve.txt (Starlette, uvicorn, python-multipart,
and what clients/onnx_predict.py needs) and the repository's suite/ package,
as onnx_predict.py does (to ship it: clients/serve.py, clients/onnx_predict.py
and suite/ in one folder); of suite/ it adds suite.serving.

The endpoint (suite.serving.app): POST /predict answers what
`onnx_predict.py --json` prints for the same images (the same pixels, the
same model), GET /healthz, GET / a line and an upload form. Concurrent
requests are run together in batches (suite.serving.batcher): up to
--max_batch images, waiting up to --max_wait_ms only for images other
requests are still decoding; a queue of --max_queue images past which
requests are refused (503) rather than held; every request answered or
refused within --timeout seconds, its upload included.

It listens on 127.0.0.1 unless --host says otherwise, and has no
authentication and no TLS: put it behind your service's own gateway
(nginx, a cloud load balancer) for those. --workers N runs N processes
(uvicorn's), each with the model and 1/N of the cores.
"""
import json
import os
import sys

from onnx_predict import ModelError, OnnxClassifier  # beside this file; puts suite/ on sys.path
from suite.plumbing import flags
from suite.serving.app import Answers, Limits, create_app
from suite.serving.batcher import Batcher

SETTINGS = "SERVE_SETTINGS"  # how --workers hands the flags to each worker process


def parse_args(argv=None):
    parser = flags.ArgumentParser(description="Serve an exported ONNX model over HTTP, "
                                              "without TensorFlow.", verbose_flag=False)
    parser.add_argument("model", help="the .onnx file of useModel.py --export_onnx")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; "
                             "0.0.0.0 for every interface, behind your own gateway)")
    parser.add_argument("--port", type=flags.int_in_range(0, 65535), default=8080,
                        help="port (default: %(default)s; 0 picks a free one)")
    flags.add_answers(parser)
    parser.add_argument("--max_batch", type=flags.positive_int, default=32,
                        help="images per run of the model (default: %(default)s)")
    parser.add_argument("--max_wait_ms", type=flags.non_negative_float, default=5.0,
                        help="how long a batch may wait for images that requests are "
                             "decoding (default: %(default)s)")
    parser.add_argument("--max_queue", type=flags.positive_int, default=256,
                        help="images waiting, past which requests get 503 (default: "
                             "%(default)s)")
    parser.add_argument("--timeout", type=flags.positive_float, default=30.0,
                        help="seconds a request may take, upload included (default: "
                             "%(default)s)")
    parser.add_argument("--max_mb", type=flags.positive_float, default=20.0,
                        help="largest request body in MB (default: %(default)s)")
    parser.add_argument("--max_megapixels", type=flags.positive_float, default=40.0,
                        help="largest image, as its header claims (default: %(default)s)")
    parser.add_argument("--threads", type=flags.positive_int, default=None,
                        help="ONNX Runtime's threads per worker (default: the cores / workers)")
    parser.add_argument("--workers", type=flags.positive_int, default=1,
                        help="processes, each with the model (default: %(default)s)")
    parser.add_argument("--access_log", action="store_true", help="log every request")
    return parser.parse_args(argv)


def make_app(args):
    """The app for the flags: the model loaded, its batcher and limits."""
    cores = max(1, (os.cpu_count() or 1) // args.workers)  # this worker's share
    classifier = OnnxClassifier(args.model, args.max_batch, args.threads or cores)
    batcher = Batcher(classifier.probabilities, args.max_batch, args.max_wait_ms / 1000,
                      args.max_queue)
    limits = Limits(max_bytes=int(args.max_mb * 2**20),
                    max_pixels=int(args.max_megapixels * 1e6), max_images=args.max_batch,
                    timeout=args.timeout, decoders=cores)
    return create_app(classifier, os.path.basename(args.model), batcher, limits,
                      Answers(args.top_k, args.threshold))


def worker_app():
    """The app of one --workers process (uvicorn imports this by name)."""
    return make_app(parse_args(json.loads(os.environ[SETTINGS])))


def main():
    argv = sys.argv[1:]
    args = parse_args(argv)
    try:
        import uvicorn
    except ImportError as error:
        sys.exit(f"error: {error.name} is not installed: pip install -r "
                 f"clients/requirements-serve.txt")
    options = dict(host=args.host, port=args.port, access_log=args.access_log,
                   log_level="info", limit_concurrency=args.max_queue + 64,
                   timeout_keep_alive=5)
    try:
        if args.workers == 1:
            app = make_app(args)
            print(f"serving {args.model}: {app.state.description}", file=sys.stderr,
                  flush=True)
            uvicorn.run(app, **options)
        else:
            OnnxClassifier(args.model)  # its one-line refusal before any worker starts
            os.environ[SETTINGS] = json.dumps(argv)
            uvicorn.run("serve:worker_app", factory=True, workers=args.workers,
                        app_dir=os.path.dirname(os.path.abspath(__file__)), **options)
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
