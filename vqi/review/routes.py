"""The app's review routes (a Flask blueprint): the review page and its JSON API (docs/serve.md).

  GET  /review                the review page
  GET  /api/review            the review file's proposals (without regions), each with its version
                              and label choices; filtered, sorted and paged by query parameters
                              (vqi.review.query); its malformed rows; `k_max`
  GET  /api/review/panel?id=[&k=][&crop=1]  a proposal's tiles, drawn now at k (vqi.review.panel);
                              header `X-Tiles` names them, `|`-separated
  POST /api/review            JSON {proposal_id, version, decision?, k?, label?, note?}: one row's
                              change; accepting an unlabelled region needs its label
Files are only read from `images_dir`, `masks_dir`, `annotations_file` and the review file's
folder, and written only to the review file. A refused request raises `BadInput`, which the app
answers as JSON; a stale edit (`Conflict`) also returns the row as it is now.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from flask import Blueprint, jsonify, render_template, request, send_file
from PIL import Image

from vqi.augment.proposals import K_LIMIT
from vqi.review import panel as review_panel
from vqi.review.query import malformed_rows, query
from vqi.review.safety import BadInput, parse_json
from vqi.review.store import Conflict, ReviewStore
from vqi.viz.legend import css_swatches


def _png(pixels: np.ndarray):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    buffer.seek(0)
    return send_file(buffer, mimetype="image/png", max_age=0)


def review_routes(review_file: str | Path | None, images_dir: str | Path, masks_dir: str | Path,
                  annotations_file: str | Path | None = None, k_max: int = K_LIMIT) -> Blueprint:
    """The blueprint `review` (its page is the endpoint `review.page`); without a review file its
    API answers 404. `annotations_file`: the review split's COCO file, to redraw enlargements at
    another k; `k_max`: the largest k the expert may choose."""
    routes = Blueprint("review", __name__, template_folder="templates")
    store = ReviewStore(review_file, k_max) if review_file else None
    annotations = review_panel.Annotations(annotations_file)

    def need_store() -> ReviewStore:
        if store is None:
            raise BadInput("no review file configured (serve.review_file / augment.review_file)", 404)
        return store

    @routes.errorhandler(Conflict)
    def conflict(err: Conflict):
        return jsonify({"error": str(err), "current": err.row}), err.status

    @routes.get("/review")
    def page():
        return render_template("review.html", legend=css_swatches())

    @routes.get("/api/review")
    def rows():
        found = need_store()
        return jsonify({"review_file": Path(review_file).name, "k_max": k_max,
                        **query(found.proposals(), request.args),
                        "malformed": malformed_rows(found.malformed(), Path(review_file))})

    @routes.get("/api/review/panel")
    def panel():
        proposal = need_store().find(request.args.get("id", ""))
        k = request.args.get("k", "")
        if k != "" and not (k.isascii() and k.isdigit() and len(k) <= 3 and int(k) <= k_max):
            raise BadInput(f"query parameter 'k' must be an integer from 0 to {k_max}, got {k[:20]!r}")
        drawn = review_panel.render(proposal, Path(images_dir), Path(masks_dir), Path(review_file).parent / "panels",
                                    annotations, int(k) if k else None, request.args.get("crop") == "1")
        response = _png(drawn.pixels)
        response.headers["X-Tiles"] = "|".join(drawn.tiles)
        return response

    @routes.post("/api/review")
    def update():
        body = parse_json(request.get_data(cache=False), "request body") if request.is_json else None
        if not isinstance(body, dict):
            raise BadInput("expected a JSON object {proposal_id, version, decision?, k?, label?, note?}")
        for field in ("proposal_id", "version"):
            if not isinstance(body.get(field), str):
                raise BadInput(f"field '{field}' is required (a string)")
        row = need_store().update(body["proposal_id"], body["version"], body.get("decision"),
                                  body.get("k"), body.get("note"), body.get("label"))
        return jsonify(row)

    return routes
