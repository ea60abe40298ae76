"""The Flask app: the inspection page, the review page and their JSON API (docs/serve.md).

Endpoints (errors are JSON `{"error": message}` with a 4xx code, never a stack trace):
  GET  /                      the inspection page
  GET  /api/models            checkpoint ids and explanation methods
  POST /api/analyze           multipart `image` (+ optional `annotation`), `model` (an id), `method`;
                              the answer's `timing_ms` accounts for the whole request
  /review, /api/review...     the review page and its API (vqi.review.routes)
Files are only read from `images_dir`, `masks_dir`, `annotations_file` and the review file's
folder, and written only to the review file (and the scratch `work_dir` for parsing
annotations); uploads never touch disk otherwise. Checkpoints come from the registry by id.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterable, Mapping

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from vqi.augment.proposals import K_LIMIT
from vqi.xai.catalogue import xai_catalogue
from vqi.models.checkpoint import CheckpointError
from vqi.review.routes import review_routes
from vqi.review.safety import BadInput
from vqi.serve import analysis
from vqi.serve.annotation import ground_truth
from vqi.serve.registry import CheckpointRegistry
from vqi.serve.safety import check_host, decode_image
from vqi.serve.timing import Stopwatch

log = logging.getLogger(__name__)


def fast_methods(names: list[str]) -> dict[str, analysis.CamFactory]:
    """Method name -> factory of the fast CAM engine (`vqi.xai`), built as `conf/xai/<name>.yaml`
    configures it; the app runs the methods that a model and a layer alone build
    (`vqi.xai.catalogue.XaiMethod.standalone`)."""
    servable = {name: m for name, m in xai_catalogue().items() if m.standalone}
    unknown = [n for n in names if n not in servable]
    if unknown:
        raise ValueError(f"serve.methods: unknown {unknown}; valid: {', '.join(servable)}")
    return {n: servable[n].build for n in names}


def create_app(registry: CheckpointRegistry, methods: Mapping[str, analysis.CamFactory],
               review_file: str | Path | None, images_dir: str | Path, masks_dir: str | Path,
               work_dir: str | Path, class_map: Mapping[str, str], void: str = "ignore",
               point_tolerance: float = 2.0, max_upload_bytes: int = 20 * 2**20,
               max_image_pixels: int = 40_000_000, allowed_hosts: Iterable[str] = (),
               annotations_file: str | Path | None = None, display_max_side: int = 4096,
               k_max: int = K_LIMIT) -> Flask:
    """A ready app; every folder it may touch is an argument. Requests must name a loopback
    host or one of `allowed_hosts` in their Host header. `annotations_file`: the review split's
    COCO file, to redraw enlargements at another k; `k_max`: the largest k the expert may choose
    (augment.enlarge.k_max; without a config, the library's ceiling K_LIMIT)."""
    app = Flask(__name__)
    hosts = frozenset(str(h).lower() for h in allowed_hosts)
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_bytes), MAX_FORM_MEMORY_SIZE=int(max_upload_bytes))
    app.json.sort_keys = False  # keep class order (class id) in the answers
    app.register_blueprint(review_routes(review_file, images_dir, masks_dir, annotations_file, k_max))
    inference = threading.Lock()  # CAM hooks live on the shared model: one analysis at a time

    @app.errorhandler(BadInput)
    def bad_input(err: BadInput):
        return jsonify({"error": str(err)}), err.status

    @app.before_request
    def known_host():
        check_host(request.host, hosts)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        message = err.description
        if err.code == 413:
            limit = f"{max_upload_bytes // 2**20} MB"
            message = (f"upload too large (limit {limit})" if (request.content_length or 0) > max_upload_bytes
                       else f"form refused: more than {app.config['MAX_FORM_PARTS']} parts, or a "
                            f"form field over {limit}")
        return jsonify({"error": message}), err.code

    @app.errorhandler(Exception)
    def internal(err: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return jsonify({"error": "internal error; see the server log"}), 500

    @app.get("/")
    def index():
        return render_template("index.html")

    @app.get("/api/models")
    def models():
        return jsonify({"models": registry.ids(), "methods": list(methods)})

    @app.post("/api/analyze")
    def analyze():
        clock = Stopwatch()
        with clock.part("receive"):  # reading and parsing the multipart upload
            form, files = request.form, request.files
            upload, ann = files.get("image"), files.get("annotation")
            image_bytes = upload.read() if upload is not None else b""
            ann_bytes = ann.read() if ann is not None and ann.filename else None
        model_id, method = form.get("model", ""), form.get("method", "")
        if model_id not in registry:
            raise BadInput(f"field 'model': unknown checkpoint id {model_id!r}; see /api/models", 404)
        if method not in methods:
            raise BadInput(f"field 'method': unknown method {method!r}; valid: {', '.join(methods)}")
        if upload is None:
            raise BadInput("field 'image': no file uploaded")
        with clock.part("decode"):
            rgb = decode_image(image_bytes, max_image_pixels, f"image {upload.filename!r}")
        with clock.part("load_model"):
            try:
                loaded = registry.get(model_id)
            except CheckpointError as err:
                log.error("checkpoint %s: %s", model_id, err)
                raise BadInput(f"checkpoint {model_id!r} cannot be loaded (missing, truncated or not a "
                               f"plain checkpoint); see the server log", 409) from None
        truth = None
        if ann_bytes is not None:
            with clock.part("annotation"):
                truth = ground_truth(image_bytes, ann_bytes, ann.filename, upload.filename or "",
                                     loaded.image_size, class_map, void, point_tolerance, work_dir,
                                     analysis.display_size(*rgb.shape[:2], display_max_side))
        with clock.part("wait"):  # for another request's analysis to finish
            inference.acquire()
        try:
            result = analysis.analyze(loaded, rgb, method, methods[method], truth, clock, display_max_side)
        finally:
            inference.release()
        with clock.part("json"):
            body = app.json.dumps(result)
        timing = app.json.dumps(clock.report_ms())
        return Response(body[:-1] + f', "timing_ms": {timing}}}', mimetype="application/json")

    return app
