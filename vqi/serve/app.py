"""The Flask app: the inspection page, the review page and their JSON API.

Endpoints (errors are JSON `{"error": message}` with a 4xx code, never a stack trace):
  GET  /                      the inspection page
  GET  /review                the review page
  GET  /api/models            checkpoint ids and explanation methods
  POST /api/analyze           multipart `image` (+ optional `annotation`), `model` (an id), `method`
  GET  /api/review            the review file's proposals (without regions), each with its version
  GET  /api/review/panel?id=  a proposal's overlay (the augment stage's panel, else drawn here)
  POST /api/review            JSON {proposal_id, version, decision?, k?, note?}: one row's change
Files are only read from `images_dir`, `masks_dir` and the review file's folder, and written only
to the review file (and the scratch `work_dir` for parsing annotations); uploads never touch disk
otherwise. Checkpoints come from the registry by id.
"""
from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from flask import Flask, jsonify, render_template, request, send_file
from PIL import Image
from werkzeug.exceptions import HTTPException

from vqi.augment.regions import decode
from vqi.augment.review_page import highlight
from vqi.serve import analysis
from vqi.serve.annotation import ground_truth
from vqi.serve.registry import CheckpointRegistry
from vqi.serve.review_store import Conflict, ReviewStore, as_row
from vqi.models.checkpoint import CheckpointError
from vqi.serve.safety import BadInput, check_host, check_rle, contained, decode_image, parse_json
from vqi.viz.overlay import overlay
from vqi.xai.gradcam import GradCAM
from vqi.xai.gradcampp import GradCAMPlusPlus
from vqi.xai.hirescam import HiResCAM
from vqi.xai.layercam import LayerCAM
from vqi.xai.scorecam import ScoreCAM
from vqi.xai.xgradcam import XGradCAM

log = logging.getLogger(__name__)
CAM_CLASSES = {cls.name: cls for cls in (GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, ScoreCAM)}


def fast_methods(names: list[str], scorecam_batch: int = 16) -> dict[str, analysis.CamFactory]:
    """Method name -> factory of the fast CAM engine (`vqi.xai`)."""
    unknown = [n for n in names if n not in CAM_CLASSES]
    if unknown:
        raise ValueError(f"serve.methods: unknown {unknown}; valid: {', '.join(CAM_CLASSES)}")
    return {n: (lambda model, layer, cls=CAM_CLASSES[n]: cls(model, layer, batch_size=scorecam_batch))
            if n == "scorecam" else (lambda model, layer, cls=CAM_CLASSES[n]: cls(model, layer)) for n in names}


def _png(pixels: np.ndarray):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    buffer.seek(0)
    return send_file(buffer, mimetype="image/png", max_age=0)


def create_app(registry: CheckpointRegistry, methods: Mapping[str, analysis.CamFactory],
               review_file: str | Path | None, images_dir: str | Path, masks_dir: str | Path,
               work_dir: str | Path, class_map: Mapping[str, str], void: str = "ignore",
               point_tolerance: float = 2.0, max_upload_bytes: int = 20 * 2**20,
               max_image_pixels: int = 40_000_000, allowed_hosts: Iterable[str] = ()) -> Flask:
    """A ready app; every folder it may touch is an argument. Requests must name a loopback
    host or one of `allowed_hosts` in their Host header."""
    app = Flask(__name__)
    hosts = frozenset(str(h).lower() for h in allowed_hosts)
    app.config.update(MAX_CONTENT_LENGTH=int(max_upload_bytes), MAX_FORM_MEMORY_SIZE=int(max_upload_bytes))
    app.json.sort_keys = False  # keep class order (class id) in the answers
    store = ReviewStore(review_file) if review_file else None
    inference = threading.Lock()  # CAM hooks live on the shared model: one analysis at a time

    def need_store() -> ReviewStore:
        if store is None:
            raise BadInput("no review file configured (serve.review_file / augment.review_file)", 404)
        return store

    @app.errorhandler(BadInput)
    def bad_input(err: BadInput):
        body = {"error": str(err)}
        if isinstance(err, Conflict):
            body["current"] = err.row
        return jsonify(body), err.status

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

    @app.get("/review")
    def review_page():
        return render_template("review.html")

    @app.get("/api/models")
    def models():
        return jsonify({"models": registry.ids(), "methods": list(methods)})

    @app.post("/api/analyze")
    def analyze():
        model_id, method = request.form.get("model", ""), request.form.get("method", "")
        if model_id not in registry:
            raise BadInput(f"field 'model': unknown checkpoint id {model_id!r}; see /api/models", 404)
        if method not in methods:
            raise BadInput(f"field 'method': unknown method {method!r}; valid: {', '.join(methods)}")
        upload = request.files.get("image")
        if upload is None:
            raise BadInput("field 'image': no file uploaded")
        image_bytes = upload.read()
        rgb = decode_image(image_bytes, max_image_pixels, f"image {upload.filename!r}")
        try:
            loaded = registry.get(model_id)
        except CheckpointError as err:
            log.error("checkpoint %s: %s", model_id, err)
            raise BadInput(f"checkpoint {model_id!r} cannot be loaded (missing, truncated or not a "
                           f"plain checkpoint); see the server log", 409) from None
        truth = None
        ann = request.files.get("annotation")
        if ann is not None and ann.filename:
            truth = ground_truth(image_bytes, ann.read(), ann.filename, upload.filename or "", loaded.image_size,
                                 class_map, void, point_tolerance, work_dir)
        with inference:
            return jsonify(analysis.analyze(loaded, rgb, method, methods[method], truth))

    @app.get("/api/review")
    def review_rows():
        proposals = need_store().proposals()
        counts = {d: sum(p.decision == d for p in proposals) for d in ("pending", "accept", "reject")}
        return jsonify({"review_file": Path(review_file).name, "counts": counts,
                        "proposals": [as_row(p) for p in proposals]})

    @app.get("/api/review/panel")
    def review_panel():
        s = need_store()
        proposal = s.find(request.args.get("id", ""))
        panels = Path(review_file).parent / "panels"
        panel = contained(panels, proposal.proposal_id.replace("/", "__") + ".png", "proposal id")
        if panel.is_file():
            return send_file(panel, mimetype="image/png", max_age=0)
        image_path = contained(images_dir, f"{proposal.image}.png", "proposal image")
        mask_path = contained(masks_dir, f"{proposal.image}.png", "proposal image")
        if not image_path.is_file() or not mask_path.is_file():
            raise BadInput(f"no image or mask for {proposal.image!r} in the review split", 404)
        picture = np.asarray(Image.open(image_path).convert("RGB"))
        mask = np.asarray(Image.open(mask_path))
        check_rle(proposal.region, *mask.shape, f"proposal {proposal.proposal_id!r}: field 'region'")
        region = decode(proposal.region, *mask.shape)
        gap = np.full((mask.shape[0], 4, 3), 255, np.uint8)
        return _png(np.concatenate([picture, gap, overlay(picture, mask), gap, highlight(picture, region)], axis=1))

    @app.post("/api/review")
    def review_update():
        body = parse_json(request.get_data(cache=False), "request body") if request.is_json else None
        if not isinstance(body, dict):
            raise BadInput("expected a JSON object {proposal_id, version, decision?, k?, note?}")
        for field in ("proposal_id", "version"):
            if not isinstance(body.get(field), str):
                raise BadInput(f"field '{field}' is required (a string)")
        row = need_store().update(body["proposal_id"], body["version"], body.get("decision"),
                                  body.get("k"), body.get("note"))
        return jsonify(row)

    return app
