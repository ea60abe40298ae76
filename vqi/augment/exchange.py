"""Proposals to and from the annotation tools an expert already uses.

Out: a COCO file (CVAT, Label Studio's converter, FiftyOne, pycocotools all read it) holding, for
every image with proposals, its current annotations (context) and one annotation per proposal:
the whole object as it would become (an enlargement: the object grown by k; a perplexed region:
the region, class `perplexed`). Each proposal annotation carries `attributes` with its
`proposal_id`, kind, score, k, an empty `decision` for the expert to fill, and (for information)
`current_decision` and `decided_by`. Also Label Studio tasks: one task per image
with the proposals as pre-annotations (`predictions`), each region's id naming its proposal.

Back: the expert deletes the proposals they reject and keeps (or marks) the ones they accept.
A proposal whose image is in the returned file but whose annotation is gone is rejected; one still
there is decided by its `attributes.decision` (`accept`/`reject`/`pending`) or `attributes.accepted`
(true/false) when the tool kept them, else by `unmarked` (`keep`: its decision is left as it is;
`accept`: kept means accepted). An integer `attributes.k` changes an enlargement's k. Shape edits
are not read back: k is the one geometric choice the review makes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import ACCEPT, DECISIONS, ENLARGE, PENDING, PERPLEXED, REJECT, Proposal
from vqi.classes import PERPLEXED as PERPLEXED_ID
from vqi.data.rasterize import instance_mask

UNMARKED = ("keep", "accept")
SEGMENTATIONS = ("polygon", "rle")
LABEL_STUDIO_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <PolygonLabels name="label" toName="image">
{labels}
  </PolygonLabels>
</View>
"""
"""The labelling config of a Label Studio project that reads `label_studio_tasks` (one Label per class)."""


class ExchangeError(ValueError):
    pass


@dataclass(frozen=True)
class Decision:
    decision: str
    k: int | None


def proposal_mask(p: Proposal, mask: np.ndarray, annotation: dict | None) -> np.ndarray:
    """The object a proposal makes: an enlargement's instance grown by k (background only), or
    the perplexed region."""
    height, width = mask.shape
    if p.kind == ENLARGE:
        if annotation is None:
            raise ExchangeError(f"proposal {p.proposal_id!r}: annotation {p.annotation_id} is not in the split")
        instance = instance_mask(annotation, height, width)
        return instance | regions.enlargement(instance, mask, p.k)
    return regions.decode(p.region, height, width)


def polygons(region: np.ndarray) -> list[list[float]]:
    """Outer contours of a region as COCO polygons (>= 3 points each) that rasterise back to
    its pixels: traced on the region at twice the resolution, so each vertex lies a quarter
    pixel inside a boundary pixel and that pixel's centre falls inside the polygon (a contour
    through pixel centres would lose half of every thin object's width)."""
    doubled = np.kron(region.astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(float) + 0.5) / 2
        if len(points) >= 3:
            out.append([round(float(v), 2) for v in points.ravel()])
    return out


def _segmentation(region: np.ndarray, kind: str) -> dict | list:
    if kind == "polygon":
        found = polygons(region)
        if found:
            return found
    return regions.rle_segmentation(region)  # too small or thin for a polygon: exact RLE


def to_coco(proposals: list[Proposal], split: dict, mask_of: Callable[[str], np.ndarray],
            segmentation: str = "polygon", include_annotations: bool = True) -> dict:
    """A COCO document of the images that have proposals; `split` is the split's COCO document,
    `mask_of(stem)` its label mask."""
    if segmentation not in SEGMENTATIONS:
        raise ExchangeError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}, got {segmentation!r}")
    stems = {Path(img["file_name"]).stem: img for img in split["images"]}
    missing = sorted({p.image for p in proposals} - set(stems))
    if missing:
        raise ExchangeError(f"proposals name images that are not in the split: {', '.join(missing[:5])}")
    wanted = {p.image for p in proposals}
    images = [img for stem, img in stems.items() if stem in wanted]
    ids = {img["id"] for img in images}
    originals = [a for a in split["annotations"] if a["image_id"] in ids]
    by_id = {a["id"]: a for a in originals}
    categories = copy.deepcopy(split["categories"])
    if all(c["id"] != PERPLEXED_ID for c in categories):
        categories.append({"id": PERPLEXED_ID, "name": PERPLEXED, "supercategory": "distractor"})
    class_ids = {c["name"]: c["id"] for c in categories}
    next_id = max((a["id"] for a in split["annotations"]), default=0) + 1
    annotations = [copy.deepcopy(a) for a in originals] if include_annotations else []
    masks: dict[str, np.ndarray] = {}
    for p in proposals:
        if p.image not in masks:
            masks[p.image] = mask_of(p.image)
        region = proposal_mask(p, masks[p.image], by_id.get(p.annotation_id))
        annotations.append({
            "id": next_id, "image_id": stems[p.image]["id"], "category_id": class_ids[p.class_name],
            "segmentation": _segmentation(region, segmentation), "area": int(region.sum()),
            "bbox": regions.bbox(region) if region.any() else [0, 0, 0, 0], "iscrowd": 0,
            "attributes": {"proposal_id": p.proposal_id, "kind": p.kind, "score": p.score, "k": p.k,
                           "decision": "", "current_decision": p.decision, "decided_by": p.decided_by},
        })
        next_id += 1
    return {"info": {"description": "vqi annotation proposals: delete the ones you reject, keep the ones you "
                                    "accept (attributes.proposal_id names each)"},
            "images": copy.deepcopy(images), "annotations": annotations, "categories": categories}


def _marked(attributes: dict, where: str) -> str | None:
    decision, accepted = attributes.get("decision"), attributes.get("accepted")
    if isinstance(accepted, bool):
        return ACCEPT if accepted else REJECT
    if isinstance(accepted, str) and accepted.lower() in ("true", "false"):
        return ACCEPT if accepted.lower() == "true" else REJECT
    if decision is None or decision == "":
        return None
    if decision not in DECISIONS:
        raise ExchangeError(f"{where}: attributes.decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    return decision


def _k(value: object, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ExchangeError(f"{where}: attributes.k must be an integer, got {value!r}") from None
    if k < 0:
        raise ExchangeError(f"{where}: attributes.k must be >= 0, got {k}")
    return k


def _decide(proposals: list[Proposal], images: set[str], kept: dict[str, tuple[str | None, int | None]],
            unmarked: str) -> dict[str, Decision]:
    if unmarked not in UNMARKED:
        raise ExchangeError(f"unmarked must be one of {', '.join(UNMARKED)}, got {unmarked!r}")
    out = {}
    for p in proposals:
        if p.image not in images:
            continue  # not sent to the tool: nothing to read
        if p.proposal_id not in kept:
            out[p.proposal_id] = Decision(REJECT, p.k)
            continue
        marked, k = kept[p.proposal_id]
        decision = marked or (ACCEPT if unmarked == "accept" else p.decision)
        out[p.proposal_id] = Decision(decision, k if (k is not None and p.kind == ENLARGE) else p.k)
    return out


def decisions_from_coco(doc: object, proposals: list[Proposal], name: str, unmarked: str = "keep") -> dict[str, Decision]:
    """proposal id -> decision read from a COCO file the expert edited (`name` names it in errors)."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations")):
        raise ExchangeError(f"{name}: not a COCO document (`images` and `annotations` lists)")
    images = set()
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            raise ExchangeError(f"{name}: images[{i}]: field 'file_name' is missing")
        images.add(Path(img["file_name"].replace("\\", "/")).stem)
    known = {p.proposal_id for p in proposals}
    kept: dict[str, tuple[str | None, int | None]] = {}
    for i, ann in enumerate(doc["annotations"]):
        attributes = ann.get("attributes") if isinstance(ann, dict) else None
        if not isinstance(attributes, dict) or "proposal_id" not in attributes:
            continue  # an original annotation, or one the expert drew: not a proposal
        where = f"{name}: annotations[{i}]"
        pid = attributes["proposal_id"]
        if pid not in known:
            raise ExchangeError(f"{where}: attributes.proposal_id {pid!r} is not in the review file")
        kept[pid] = (_marked(attributes, where), _k(attributes.get("k"), where))
    return _decide(proposals, images, kept, unmarked)


def label_studio_tasks(proposals: list[Proposal], coco: dict, image_url: str) -> list[dict]:
    """Label Studio tasks (one per image) from `to_coco`'s document: each proposal a polygon
    pre-annotation in % of the image, its region id `p<n>` named in `data.vqi_proposals`."""
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if "proposal_id" in ann.get("attributes", {}):
            by_image.setdefault(ann["image_id"], []).append(ann)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    tasks = []
    for img in coco["images"]:
        width, height = img["width"], img["height"]
        results, mapping = [], {}
        for ann in by_image.get(img["id"], []):
            segmentation = ann["segmentation"]
            if not isinstance(segmentation, list):  # RLE: Label Studio pre-annotations take polygons
                segmentation = polygons(regions.decode(segmentation["counts"], height, width))
            for j, polygon in enumerate(segmentation):
                rid = f"p{len(mapping)}"
                mapping[rid] = ann["attributes"]["proposal_id"]
                points = np.reshape(polygon, (-1, 2)) / [width, height] * 100
                results.append({"id": rid, "from_name": "label", "to_name": "image", "type": "polygonlabels",
                                "original_width": width, "original_height": height,
                                "value": {"points": points.round(3).tolist(),
                                          "polygonlabels": [names[ann["category_id"]]]}})
        tasks.append({"data": {"image": image_url + img["file_name"], "vqi_proposals": mapping},
                      "predictions": [{"model_version": "vqi-proposals", "result": results}]})
    return tasks


def label_studio_config(class_names: Iterable[str]) -> str:
    return LABEL_STUDIO_CONFIG.format(labels="\n".join(f'    <Label value="{n}"/>' for n in class_names))


def decisions_from_label_studio(tasks: object, proposals: list[Proposal], name: str,
                                unmarked: str = "keep") -> dict[str, Decision]:
    """proposal id -> decision from a Label Studio JSON export of `label_studio_tasks`' project:
    a proposal whose regions are all still in the task's latest annotation is kept, one with a
    deleted region is rejected; tasks nobody annotated are left alone."""
    if not isinstance(tasks, list):
        raise ExchangeError(f"{name}: not a Label Studio JSON export (a list of tasks)")
    images, kept = set(), {}
    known = {p.proposal_id for p in proposals}
    for i, task in enumerate(tasks):
        data = task.get("data") if isinstance(task, dict) else None
        mapping = data.get("vqi_proposals") if isinstance(data, dict) else None
        if not isinstance(mapping, dict):
            raise ExchangeError(f"{name}: task {i}: field 'data.vqi_proposals' is missing (not exported by vqi?)")
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not annotations:
            continue  # nobody reviewed this image: its proposals stay as they are
        pids = set(mapping.values())
        unknown = sorted(pids - known)
        if unknown:
            raise ExchangeError(f"{name}: task {i}: proposals {unknown[:3]} are not in the review file")
        images.update(p.image for p in proposals if p.proposal_id in pids)
        latest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        present = {r.get("id") for r in latest.get("result") or [] if isinstance(r, dict)}
        for pid in pids:  # a proposal drawn as several polygons is kept only if none was deleted
            if all(rid in present for rid, owner in mapping.items() if owner == pid):
                kept[pid] = (None, None)
    return _decide([p for p in proposals if p.image in images], images, kept, unmarked)


def apply_decisions(proposals: list[Proposal], decisions: dict[str, Decision], decided_by: str) -> int:
    """Set the decisions (and k) in place; the number of rows that changed."""
    changed = 0
    for p in proposals:
        d = decisions.get(p.proposal_id)
        if d is None or (d.decision, d.k) == (p.decision, p.k):
            continue
        if d.decision != p.decision:
            p.decision, p.decided_by = d.decision, (decided_by if d.decision != PENDING else "")
        p.k = d.k
        changed += 1
    return changed
