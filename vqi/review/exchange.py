"""Proposals to and from the annotation tools an expert already uses.

Out: a COCO file (CVAT, Label Studio's converter, FiftyOne, pycocotools all read it) holding, for
every image with proposals, its current annotations (context) and one annotation per proposal:
the whole object as it would become (an enlargement: the object grown by k; an unlabelled region:
the region). Its category is the proposal's label: an enlargement's class, an unlabelled region's
chosen label, else its thin class (the model's guess) for the expert to keep or change to
`perplexed`. Each proposal annotation carries `attributes` with its `proposal_id`, kind, score,
k, an empty `decision` for the expert to fill, and (for information) `current_decision`,
`current_label` and `decided_by`. Also Label Studio tasks: one task per image with the proposals
as pre-annotations (`predictions`) labelled the same way, each region's id naming its proposal.

Back: the expert deletes the proposals they reject and keeps (or marks) the ones they accept.
A proposal whose image is in the returned file but whose annotation is gone is rejected; one still
there is decided by its `attributes.decision` (`accept`/`reject`/`pending`) or `attributes.accepted`
(true/false) when the tool kept them, else by `unmarked` (`keep`: its decision is left as it is;
`accept`: kept means accepted). An integer `attributes.k` (0..k_max) changes an enlargement's k.
A kept unlabelled region's category (COCO) or polygon label (Label Studio) is its label when it
is accepted or the expert changed it; an untouched guess on an undecided region chooses nothing.
Shape edits are not read back: k is the one geometric choice the review makes.

Every field read back is checked as the review page checks it; the first bad one refuses the
whole file with an ExchangeError naming the file, the record and the field.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np

from vqi.augment import regions
from vqi.augment.proposals import (ACCEPT, DECISIONS, ENLARGE, K_LIMIT, PENDING, PERPLEXED, REJECT, Proposal,
                                   label_choices)
from vqi.classes import PERPLEXED as PERPLEXED_ID
from vqi.data.rasterize import instance_mask
from vqi.review.apply import LABEL_IDS
from vqi.review.file import label_problem
from vqi.utils.nesting import MAX_JSON_DEPTH, json_depth

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
    label: str | None = None
    """The label read back; None leaves the proposal's as it is."""


@dataclass(frozen=True)
class _Kept:
    """What the returned file says of a proposal still in it."""
    mark: str | None
    k: int | None
    label: str


def load_document(path: Path) -> object:
    """A tool's JSON file, refused (naming it) when it is not UTF-8 JSON or nests deeper than
    MAX_JSON_DEPTH (Python's parser and every walk of it recurse)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        doc = None
    except ValueError as err:   # not UTF-8, not JSON, or an integer past Python's 4300 digits
        raise ExchangeError(f"{path}: not UTF-8 JSON ({err})") from None
    if doc is None or json_depth(doc) > MAX_JSON_DEPTH:
        raise ExchangeError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


def _shown(value: object) -> str:
    """A value quoted in an error message: short, and a structure named by its type, never dumped."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 40 else text[:40] + "..."
    return "a JSON object" if isinstance(value, dict) else "a JSON array" if isinstance(value, list) else \
        f"a {type(value).__name__}"


def proposal_mask(p: Proposal, mask: np.ndarray, annotation: dict | None) -> np.ndarray:
    """The object a proposal makes: an enlargement's instance grown by k (background only), or
    the unlabelled region."""
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
            "id": next_id, "image_id": stems[p.image]["id"], "category_id": class_ids[p.label or p.class_name],
            "segmentation": _segmentation(region, segmentation), "area": int(region.sum()),
            "bbox": regions.bbox(region) if region.any() else [0, 0, 0, 0], "iscrowd": 0,
            "attributes": {"proposal_id": p.proposal_id, "kind": p.kind,
                           "score": p.score if math.isfinite(p.score) else None, "k": p.k, "decision": "",
                           "current_decision": p.decision, "current_label": p.label, "decided_by": p.decided_by},
        })
        next_id += 1
    return {"info": {"description": "vqi annotation proposals: delete the ones you reject, keep the ones you "
                                    "accept (attributes.proposal_id names each); an unlabelled region's "
                                    f"category is its label: its thin class (a missed object) or {PERPLEXED} "
                                    "(a look-alike)"},
            "images": copy.deepcopy(images), "annotations": annotations, "categories": categories}


def _marked(attributes: dict, where: str) -> str | None:
    """The decision the expert marked (`accepted` first), None when unmarked."""
    decision, accepted = attributes.get("decision"), attributes.get("accepted")
    if accepted is not None and accepted != "":
        if isinstance(accepted, bool):
            return ACCEPT if accepted else REJECT
        if isinstance(accepted, str) and accepted.strip().lower() in ("true", "false"):
            return ACCEPT if accepted.strip().lower() == "true" else REJECT
        raise ExchangeError(f"{where}: attributes.accepted must be true or false, got {_shown(accepted)}")
    if decision is None or decision == "":
        return None
    if decision not in DECISIONS:   # also any non-text value
        raise ExchangeError(f"{where}: attributes.decision must be one of {', '.join(DECISIONS)}, "
                            f"got {_shown(decision)}")
    return decision


def _k(value: object, proposal: Proposal, where: str, k_max: int) -> int | None:
    """An enlargement's k from the tool (an integer, or its digits as text) in 0..k_max; None
    when absent. Only enlargements have k."""
    if value is None or value == "":
        return None
    if proposal.kind != ENLARGE:
        raise ExchangeError(f"{where}: attributes.k: proposal {proposal.proposal_id!r} ({proposal.kind}): only "
                            f"enlargements have k (got {_shown(value)})")
    k = None
    if isinstance(value, int) and not isinstance(value, bool):
        k = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        k = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 9:
        k = int(value)
    if k is None or not 0 <= k <= k_max:
        raise ExchangeError(f"{where}: attributes.k must be an integer from 0 to {k_max}, got {_shown(value)}")
    return k


def _label(name: str, proposal: Proposal, where: str, field: str) -> str:
    """A label read back, if the proposal may take it (an enlargement: only its own class)."""
    choices = label_choices(proposal)
    if name not in choices:
        raise ExchangeError(f"{where}: {field} is {_shown(name)}, but proposal {proposal.proposal_id!r} "
                            f"({proposal.kind}) may only be {' or '.join(choices)}")
    return name


def _decide(proposals: list[Proposal], images: set[str], kept: dict[str, _Kept],
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
        found = kept[p.proposal_id]
        decision = found.mark or (ACCEPT if unmarked == "accept" else p.decision)
        chosen = decision == ACCEPT or found.label != (p.label or p.class_name)   # not the untouched guess
        out[p.proposal_id] = Decision(decision, p.k if found.k is None else found.k, found.label if chosen else None)
    return out


def _categories(doc: dict, name: str) -> dict[int, str]:
    """Category id -> name of a returned COCO file (vqi's own ids when it lists none)."""
    categories = doc.get("categories")
    if categories is None:
        return {cid: label for label, cid in LABEL_IDS.items()}
    if not isinstance(categories, list):
        raise ExchangeError(f"{name}: field 'categories' must be a list, got {_shown(categories)}")
    out = {}
    for i, c in enumerate(categories):
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(c.get("name"), str):
            raise ExchangeError(f"{name}: categories[{i}]: fields 'id' (an integer) and 'name' (text) are required")
        out[cid] = c["name"]
    return out


def _image_stems(doc: dict, name: str) -> dict[object, str]:
    """Image id -> file stem of a returned COCO file; ids must be unique integers or text."""
    stems: dict[object, str] = {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("file_name"), str):
            raise ExchangeError(f"{name}: images[{i}]: field 'file_name' is missing")
        image_id = img.get("id")
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise ExchangeError(f"{name}: images[{i}]: field 'id' must be an integer, got {_shown(image_id)}")
        if image_id in stems:
            raise ExchangeError(f"{name}: images[{i}]: field 'id' {_shown(image_id)} appears twice")
        stems[image_id] = Path(img["file_name"].replace("\\", "/")).stem
    return stems


def decisions_from_coco(doc: object, proposals: list[Proposal], name: str, unmarked: str = "keep",
                        k_max: int = K_LIMIT) -> dict[str, Decision]:
    """proposal id -> decision read from a COCO file the expert edited (`name` names it in errors)."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations")):
        raise ExchangeError(f"{name}: not a COCO document (`images` and `annotations` lists)")
    stems = _image_stems(doc, name)
    categories = _categories(doc, name)
    by_id = {p.proposal_id: p for p in proposals}
    kept: dict[str, _Kept] = {}
    first: dict[str, int] = {}
    for i, ann in enumerate(doc["annotations"]):
        attributes = ann.get("attributes") if isinstance(ann, dict) else None
        if not isinstance(attributes, dict) or "proposal_id" not in attributes:
            continue  # an original annotation, or one the expert drew: not a proposal
        where = f"{name}: annotations[{i}]"
        pid = attributes["proposal_id"]
        if not isinstance(pid, str) or pid not in by_id:
            raise ExchangeError(f"{where}: attributes.proposal_id {_shown(pid)} is not in the review file")
        if pid in first:
            raise ExchangeError(f"{where}: attributes.proposal_id {pid!r} appears twice "
                                f"(also annotations[{first[pid]}])")
        first[pid] = i
        p = by_id[pid]
        image_id = ann.get("image_id")
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or image_id not in stems:
            raise ExchangeError(f"{where}: field 'image_id' {_shown(image_id)} is not an image of the file")
        if stems[image_id] != p.image:
            raise ExchangeError(f"{where}: field 'image_id' names image {stems[image_id]!r}, but proposal {pid!r} "
                                f"is on {p.image!r}")
        category = ann.get("category_id")
        if not isinstance(category, int) or isinstance(category, bool) or category not in categories:
            raise ExchangeError(f"{where}: field 'category_id' {_shown(category)} is not one of the file's categories")
        kept[pid] = _Kept(_marked(attributes, where), _k(attributes.get("k"), p, where, k_max),
                          _label(categories[category], p, where, f"field 'category_id' ({category})"))
    return _decide(proposals, set(stems.values()), kept, unmarked)


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


def _checked_task(task: object, where: str, known: set[str]) -> tuple[dict[str, str], list[dict]]:
    """A Label Studio task's region id -> proposal id mapping and its annotations, every field
    the import reads checked."""
    data = task.get("data") if isinstance(task, dict) else None
    mapping = data.get("vqi_proposals") if isinstance(data, dict) else None
    if not isinstance(mapping, dict):
        raise ExchangeError(f"{where}: field 'data.vqi_proposals' is missing (not exported by vqi?)")
    bad = next((v for v in mapping.values() if not isinstance(v, str)), None)
    if bad is not None:
        raise ExchangeError(f"{where}: field 'data.vqi_proposals' must map region ids to proposal ids, "
                            f"got {_shown(bad)}")
    unknown = sorted(set(mapping.values()) - known)
    if unknown:
        raise ExchangeError(f"{where}: proposals {unknown[:3]} are not in the review file")
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise ExchangeError(f"{where}: field 'annotations' must be a list, got {_shown(annotations)}")
    for j, annotation in enumerate(annotations):
        at = f"{where}: annotations[{j}]"
        if not isinstance(annotation, dict):
            raise ExchangeError(f"{at}: must be an object, got {_shown(annotation)}")
        for key in ("updated_at", "created_at"):
            if not isinstance(annotation.get(key) or "", str):
                raise ExchangeError(f"{at}: field '{key}' must be a time as text, got {_shown(annotation[key])}")
        results = annotation.get("result") or []
        if not isinstance(results, list) or not all(isinstance(r, dict) and isinstance(r.get("id", ""), str)
                                                    for r in results):
            raise ExchangeError(f"{at}: field 'result' must be a list of objects, a region's 'id' text")
    return mapping, annotations


def _region_label(result: dict, where: str) -> str:
    value = result.get("value")
    labels = value.get("polygonlabels") if isinstance(value, dict) else None
    if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
        raise ExchangeError(f"{where}: region {result['id']!r}: field 'value.polygonlabels' must name one label, "
                            f"got {_shown(labels)}")
    return labels[0]


def decisions_from_label_studio(tasks: object, proposals: list[Proposal], name: str,
                                unmarked: str = "keep") -> dict[str, Decision]:
    """proposal id -> decision from a Label Studio JSON export of `label_studio_tasks`' project:
    a proposal whose regions are all still in the task's latest annotation is kept (its regions'
    label read back), one with a deleted region is rejected; tasks nobody annotated are left alone."""
    if not isinstance(tasks, list):
        raise ExchangeError(f"{name}: not a Label Studio JSON export (a list of tasks)")
    by_id = {p.proposal_id: p for p in proposals}
    images: set[str] = set()
    kept: dict[str, _Kept] = {}
    task_of: dict[str, int] = {}
    for i, task in enumerate(tasks):
        where = f"{name}: task {i}"
        mapping, annotations = _checked_task(task, where, set(by_id))
        for pid in mapping.values():
            if task_of.setdefault(pid, i) != i:
                raise ExchangeError(f"{where}: proposal {pid!r} is also in task {task_of[pid]}")
        annotations = [a for a in annotations if not a.get("was_cancelled")]
        if not annotations:
            continue  # nobody reviewed this image: its proposals stay as they are
        images.update(by_id[pid].image for pid in mapping.values())
        latest = max(annotations, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
        present = {r["id"]: r for r in latest.get("result") or [] if "id" in r}   # (a relation has none)
        for pid in set(mapping.values()):   # a proposal drawn as several polygons is kept only if none was deleted
            ids = [rid for rid, owner in mapping.items() if owner == pid]
            if all(rid in present for rid in ids):
                labels = {_region_label(present[rid], where) for rid in ids}
                if len(labels) > 1:
                    raise ExchangeError(f"{where}: the regions of proposal {pid!r} carry different labels "
                                        f"({', '.join(sorted(labels))})")
                kept[pid] = _Kept(None, None, _label(labels.pop(), by_id[pid], where, "its regions' label"))
    return _decide([p for p in proposals if p.image in images], images, kept, unmarked)


def apply_decisions(proposals: list[Proposal], decisions: dict[str, Decision], decided_by: str) -> int:
    """Set the decisions (k and label) in place; the number of rows that changed. A new
    decision, or an accepted proposal's new label, is `decided_by`'s."""
    changed = 0
    for p in proposals:
        d = decisions.get(p.proposal_id)
        if d is None:
            continue
        label = p.label if d.label is None else d.label
        if (d.decision, d.k, label) == (p.decision, p.k, p.label):
            continue
        if d.decision != p.decision or (label != p.label and d.decision == ACCEPT):
            p.decided_by = decided_by if d.decision != PENDING else ""
        p.decision, p.k, p.label = d.decision, d.k, label
        problem = label_problem(p)
        if problem:
            raise ExchangeError(f"proposal {p.proposal_id!r}: {problem}")
        changed += 1
    return changed
