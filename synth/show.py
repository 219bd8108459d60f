"""Contact sheet of a generation run: real | fake | mask triples with each sample's key choices.

The samples are drawn uniformly (seeded reservoir sampling over ``manifest.jsonl``, so memory
stays flat for any run size) among the ``ok`` lines; each tile shows the three images side by
side and, under them, the plan's main choices (pairing, region, blend, colour, degradations)
as text.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from synth.writer import iter_manifest, record_files, record_index

__all__ = ["contact_sheet", "write_contact_sheet", "plan_caption"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BG = 24  # sheet background grey
_TEXT_COLOR = (235, 235, 235)


def plan_caption(plan: dict) -> list[str]:
    """Short text lines describing a plan: ``["swap | full | poisson", "reinhard | jpeg ..."]``.

    Hershey fonts are ASCII only, hence ``|`` rather than a middle dot.
    """
    first = [plan.get("pairing", "?"), plan.get("mask", {}).get("region", "?"), plan.get("blend", {}).get("op", "?")]
    occ = plan.get("mask", {}).get("occlusion", "none")
    if occ and occ != "none":
        first.append(f"occ:{occ}")
    second = []
    if plan.get("color"):
        second.append(plan["color"]["op"])
    second += [s["op"] for s in plan.get("perturb", [])]
    second += [s["op"] for s in plan.get("source_degrade", [])]
    second += [f"bg:{s['op']}" for s in plan.get("target_degrade", [])]  # degraded background
    lines = [" | ".join(first)]
    if second:
        lines.append(" | ".join(second))
    post = [s["op"] for s in plan.get("post", [])]
    if post:
        lines.append("post: " + " | ".join(post))
    return lines


def _fit_lines(lines: list[str], width: int, scale: float) -> list[str]:
    """Wrap caption lines at ``|`` so each fits in ``width`` pixels."""
    out = []
    for line in lines:
        parts = line.split(" | ")
        cur = ""
        for part in parts:
            cand = part if not cur else f"{cur} | {part}"
            if cur and cv2.getTextSize(cand, _FONT, scale, 1)[0][0] > width:
                out.append(cur)
                cur = part
            else:
                cur = cand
        out.append(cur)
    return out


def _read_rgb(path: Path, tile: int, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise ValueError(f"{path}: cannot read the sample image (missing or corrupt)")
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[:2] != (tile, tile):
        img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
    return img


def _pick(manifest: Path, n: int, seed: int) -> list[tuple[dict, dict[str, Path]]]:
    """Uniform sample of ``n`` ok records (reservoir sampling), returned in sample order with
    the paths of their images; a chosen line whose id or paths are not the run's own is refused
    (``ValueError`` naming ``manifest:line``, see :func:`synth.writer.record_files`)."""
    rng = np.random.default_rng(seed)
    chosen: list[tuple[int, dict]] = []
    seen = 0
    for lineno, record in iter_manifest(manifest):
        if record.get("status") != "ok":
            continue
        seen += 1
        if len(chosen) < n:
            chosen.append((lineno, record))
        else:
            j = int(rng.integers(seen))
            if j < n:
                chosen[j] = (lineno, record)
    picked = []
    for lineno, record in chosen:
        where = f"{manifest}:{lineno}"
        record_index(record, where)
        picked.append((record, record_files(manifest.parent, record, where)))
    return sorted(picked, key=lambda p: p[0]["i"])


def contact_sheet(out_dir, n: int = 24, seed: int = 0, cols: int = 3, tile: int = 128,
                  text_scale: float = 0.35) -> np.ndarray:
    """Grid of ``n`` random ok samples of the run in ``out_dir`` -> uint8 HxWx3 RGB.

    Each cell is ``real | fake | mask`` (each ``tile`` x ``tile``; mask in grey) above up to
    three caption lines (see :func:`plan_caption`). ``cols`` cells per row. Fewer cells
    if the run has fewer ok samples; ``ValueError`` if it has none.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.jsonl"
    if not manifest.exists():
        raise ValueError(f"{out_dir}: no manifest.jsonl (not a generation output directory)")
    if n < 1 or cols < 1 or tile < 16:
        raise ValueError(f"n, cols must be >= 1 and tile >= 16; got n={n}, cols={cols}, tile={tile}")
    picked = _pick(manifest, n, seed)
    if not picked:
        raise ValueError(f"{manifest}: no ok samples to show")
    records = [record for record, _ in picked]
    line_h = cv2.getTextSize("Ag", _FONT, text_scale, 1)[0][1] + 6
    cell_w = 3 * tile + 2 * 2
    captions = [_fit_lines([f"#{r['id']}"] + plan_caption(r.get("plan") or {}), cell_w - 4, text_scale)
                for r in records]
    text_h = line_h * max(len(c) for c in captions) + 4
    cell_h = tile + text_h
    pad = 6
    cols = min(cols, len(records))
    rows = -(-len(records) // cols)
    sheet = np.full((pad + rows * (cell_h + pad), pad + cols * (cell_w + pad), 3), _BG, np.uint8)
    for k, ((_, files), caption) in enumerate(zip(picked, captions)):
        y0 = pad + (k // cols) * (cell_h + pad)
        x0 = pad + (k % cols) * (cell_w + pad)
        for j, kind in enumerate(("real", "fake", "mask")):
            flags = cv2.IMREAD_GRAYSCALE if kind == "mask" else cv2.IMREAD_COLOR
            x = x0 + j * (tile + 2)
            sheet[y0:y0 + tile, x:x + tile] = _read_rgb(files[kind], tile, flags)
        for m, text in enumerate(caption):
            y = y0 + tile + (m + 1) * line_h
            cv2.putText(sheet, text, (x0 + 2, y), _FONT, text_scale, _TEXT_COLOR, 1, cv2.LINE_AA)
    return sheet


def write_contact_sheet(out_dir, n: int = 24, path=None, seed: int = 0, cols: int = 3, tile: int = 128) -> Path:
    """Write :func:`contact_sheet` as PNG to ``path`` (default ``out_dir/sheet.png``); return the path."""
    from synth.io import write_png_atomic

    path = Path(path) if path else Path(out_dir) / "sheet.png"
    sheet = contact_sheet(out_dir, n=n, seed=seed, cols=cols, tile=tile)  # validates out_dir first
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png_atomic(path, sheet, compression=3)
    return path
