"""The HTTP endpoint of clients/serve.py, on Starlette (an ASGI app that
uvicorn runs), without TensorFlow.

    POST /predict   image bytes in: the raw body (Content-Type image/* or
                    application/octet-stream) or the files of a
                    multipart/form-data form; ?top_k=K&threshold=P. Answers
                    what `clients/onnx_predict.py --json` prints: {"model",
                    "checkpoint", "precision", "results": [{"input", "label",
                    "predictions": [{"label", "probability"}]} or {"input",
                    "error"}]}, where "input" is the form's file name, or
                    "body".
    GET /healthz    {"status": "ok", ...} once the model is loaded.
    GET /           a line about the model, and an upload form.

Each image is read as every other path of the suite reads it
(suite.images.decoding, then suite.images.eval_transform), in worker
threads, at most `decoders` at a time (decoding is the per-request cost
that grows with the image; a bound on it bounds memory). The model runs
on batches gathered across requests (suite.serving.batcher).

Refusals are one line, {"error": ...}, and the server goes on: 400 an
empty body, bytes that are no image, a bad query; 408 a body slower than
the timeout; 413 a body over max_bytes or an image over max_pixels; 415 a
content type other than those above (the line says how to send it); 503
a full queue (Retry-After: 1); 504 no answer within the timeout. A request
with several files answers 200 when one of them could be classified, the
others carrying their "error" as useModel.py's results do.
"""
import asyncio
import contextlib
import html
import logging
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from suite.images.decoding import BadImage, encode_image_bytes, header_size
from suite.images.eval_transform import eval_pixels
from suite.prediction.results import rank
from suite.serving.batcher import Full

RAW_TYPES = ("image/", "application/octet-stream")
HOW_TO_SEND = ("send the image as the body with Content-Type image/jpeg (curl -H "
               "'Content-Type: image/jpeg' --data-binary @photo.jpg URL) or as a file of a "
               "multipart/form-data form (curl -F image=@photo.jpg URL)")


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""
    max_bytes: int = 20 * 2**20      # a phone photo is 2-10 MB
    max_pixels: int = 40_000_000     # the header's claim, checked before decoding
    max_images: int = 32             # files in one form
    timeout: float = 30.0            # seconds, from the first byte read to the answer
    decoders: int = 2                # images decoded at once


@dataclass(frozen=True)
class Answers:
    """The answers' defaults (a request's query may change them)."""
    top_k: int = 3
    threshold: float | None = None


class Refused(Exception):
    """A request the server cannot answer: its status and one line."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def create_app(classifier, name, batcher, limits=Limits(), answers=Answers()):
    """The Starlette app serving classifier (clients/onnx_predict.py's
    OnnxClassifier: image_size, max_side, labels, checkpoint, precision)
    through batcher, a Batcher of its probabilities; name is the model's
    in the answers."""
    decoding = asyncio.Semaphore(limits.decoders)
    about = {"model": name, "checkpoint": classifier.checkpoint,
             "precision": classifier.precision}

    async def predict(request):
        deadline = asyncio.get_running_loop().time() + limits.timeout  # the upload included
        try:
            images = await _by_deadline(_read_images(request, limits), deadline, 408,
                                        f"the request's body did not arrive within "
                                        f"{limits.timeout:g} s")
            top_k, threshold = _answer_options(request.query_params, answers)
            results = await _by_deadline(
                _classify(images, classifier, batcher, decoding, limits, top_k, threshold),
                deadline, 504, f"no answer within {limits.timeout:g} s: the server is busy")
        except Refused as refusal:
            return JSONResponse({"error": refusal.message}, refusal.status, refusal.headers)
        except ClientDisconnect:  # gone before its body arrived: no one to answer or log
            return Response(status_code=400)
        except Exception as error:  # a fault of ours: the request fails, the server goes on
            logging.getLogger("serve").exception("POST /predict failed")
            return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"},
                                500)
        statuses = [result.pop("status", None) for result in results]
        if not any("predictions" in result for result in results):
            body = {"error": results[0]["error"]}
            if len(results) > 1:
                body["results"] = results
            return JSONResponse(body, statuses[0])
        return JSONResponse(dict(about, results=results))

    async def healthz(request):
        return JSONResponse(dict(about, status="ok", waiting=batcher.waiting,
                                 batches=batcher.batches, images=batcher.images))

    async def home(request):
        return HTMLResponse(_home_page(name, classifier))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                            Route("/healthz", healthz), Route("/", home)],
                    lifespan=lifespan)
    app.state.description = _description(classifier)
    return app


async def _by_deadline(awaitable, deadline, status, message):
    """awaitable's result, or Refused(status, message) once the loop's clock passes deadline."""
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        raise Refused(status, message) from None


async def _read_images(request, limits):
    """[(input name, bytes)] of a request: its body, or its form's files.
    Raises Refused."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _form_files(request.headers, await _read_body(request, limits), limits)
    if not content_type.startswith(RAW_TYPES):
        raise Refused(415, f"Content-Type {content_type or 'missing'} is not an image: "
                           f"{HOW_TO_SEND}")
    return [("body", await _read_body(request, limits))]


async def _read_body(request, limits):
    """The body, refused (413) as soon as it passes max_bytes, and when empty (400)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise Refused(413, f"the body is {int(declared):,} bytes, over this server's "
                           f"{limits.max_bytes:,}: shrink the image first")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise Refused(413, f"the body is over this server's {limits.max_bytes:,} bytes: "
                               f"shrink the image first")
        chunks.append(chunk)
    if not size:
        raise Refused(400, f"the body is empty: {HOW_TO_SEND}")
    return b"".join(chunks)


async def _form_files(headers, body, limits):
    async def replay():
        yield body
    parser = MultiPartParser(Headers(raw=headers.raw), replay(), max_files=limits.max_images,
                             max_fields=limits.max_images, max_part_size=limits.max_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise Refused(400, f"the form cannot be read ({error}): {HOW_TO_SEND}") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    try:
        if not files:
            raise Refused(400, f"the form has no file: {HOW_TO_SEND}")
        return [(upload.filename or f"file {number}", await upload.read())
                for number, upload in enumerate(files, 1)]
    finally:
        await form.close()


def _answer_options(query, answers):
    """(top_k, threshold) from the query, else the server's; Refused (400) if odd."""
    try:
        top_k = int(query.get("top_k", answers.top_k))
        threshold = query.get("threshold", answers.threshold)
        threshold = None if threshold in (None, "") else float(threshold)
    except ValueError:
        raise Refused(400, "top_k must be a whole number and threshold a number") from None
    if top_k < 1 or (threshold is not None and not 0 <= threshold <= 1):
        raise Refused(400, "top_k must be 1 or more and threshold between 0 and 1")
    return top_k, threshold


async def _classify(images, classifier, batcher, decoding, limits, top_k, threshold):
    """One result per image, in order: its ranked classes, or its error and status."""
    async def prepare(data):
        async with decoding:
            return await run_in_threadpool(_pixels, data, classifier, limits)

    with batcher.coming(len(images)):
        prepared = await asyncio.gather(*(prepare(data) for _, data in images))
    futures = {}
    try:
        for index, pixels in enumerate(prepared):
            if not isinstance(pixels, Refused):
                futures[index] = batcher.submit(pixels)
        rows = dict(zip(futures, await asyncio.gather(*futures.values())))
    except Full as full:
        raise Refused(503, f"the server is busy ({full}): try again", {"Retry-After": "1"})
    finally:
        for future in futures.values():
            future.cancel()  # no-op for those answered; the rest are skipped
    results = []
    for index, (source, _) in enumerate(images):
        if index in rows:
            results.append(dict(input=source, **rank(rows[index], classifier.labels, top_k,
                                                     threshold)))
        else:
            refusal = prepared[index]
            results.append({"input": source, "error": refusal.message,
                            "status": refusal.status})
    return results


def _pixels(data, classifier, limits):
    """An upload's bytes -> the model's pixels, or Refused: too many pixels
    (413), not an image (400)."""
    try:
        width, height = header_size(data)
        if width * height > limits.max_pixels:
            return Refused(413, f"the image is {width}x{height} pixels, over this server's "
                                f"{limits.max_pixels:,}: shrink it first")
        jpeg = encode_image_bytes(data, classifier.max_side)[0]
        return eval_pixels(jpeg, classifier.image_size)
    except BadImage as error:
        return Refused(400, str(error))


def _description(classifier):
    """The model in a line: "10 classes (a, b, ...), 28 px, int8"."""
    labels = ", ".join(classifier.labels[:20]) + (", ..." if len(classifier.labels) > 20 else "")
    return (f"{len(classifier.labels)} classes ({labels}), {classifier.image_size} px, "
            f"{classifier.precision}")


def _home_page(name, classifier):
    return f"""<!doctype html>
<meta charset="utf-8"><title>{html.escape(name)}</title>
<p>{html.escape(name)}: {html.escape(_description(classifier))}. POST an image to /predict.</p>
<form action="/predict" method="post" enctype="multipart/form-data">
<input type="file" name="image" accept="image/*" multiple> <button>Classify</button></form>
"""
