"""Pictures of a supernet search: alpha heat maps (PIL), cell pictures (graphviz) and an animated GIF.

A heat map shows one cell type's mixing weights p = softmax(alpha), shape (14, K): one row per edge
(labelled ``e<i> <input>-><node>``), one column per candidate op, darker = larger, the value printed in
each square; ops removed by a projection are crossed out. Pillow draws them (matplotlib is not required).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from space.search_network import EDGE_ENDPOINTS, SearchNetwork

CELL_W, CELL_H = 58, 22
LEFT, TOP, MARGIN = 78, 96, 10


def _text_image(text: str, font) -> Image.Image:
    left, top, right, bottom = font.getbbox(text)
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), text, fill=255, font=font)
    return image


def draw_heatmap(probs: torch.Tensor, op_names: Sequence[str], title: str,
                 active: Sequence[Sequence[str]] | None = None) -> Image.Image:
    """A heat map of ``probs`` (14, K) with columns ``op_names``; ``active[e]``: ops still present."""
    font = ImageFont.load_default()
    rows, cols = probs.shape
    width, height = LEFT + cols * CELL_W + MARGIN, TOP + rows * CELL_H + MARGIN
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), title, fill="black", font=font)
    for col, name in enumerate(op_names):  # column labels, rotated to fit
        label = _text_image(name, font).rotate(60, expand=True)
        x = LEFT + col * CELL_W + CELL_W // 2 - label.width // 2
        image.paste((0, 0, 0), (x, TOP - 4 - label.height), label)
    top = float(probs.max()) if probs.numel() else 1.0
    for row in range(rows):
        source, node = EDGE_ENDPOINTS[row]
        draw.text((MARGIN, TOP + row * CELL_H + 5), f"e{row:<2d} {source}->{node}", fill="black", font=font)
        for col in range(cols):
            value = float(probs[row, col])
            shade = int(255 * (1.0 - value / top)) if top > 0 else 255
            box = (LEFT + col * CELL_W, TOP + row * CELL_H, LEFT + (col + 1) * CELL_W - 1, TOP + (row + 1) * CELL_H - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline=(200, 200, 200))
            draw.text((box[0] + 8, box[1] + 5), f"{value:.3f}", fill="black" if shade > 110 else "white", font=font)
            if active is not None and op_names[col] not in active[row]:
                draw.line((box[0], box[1], box[2], box[3]), fill="red", width=2)
    return image


def network_heatmap(network: SearchNetwork, caption: str = "") -> Image.Image | None:
    """The heat maps of every cell type of ``network`` side by side, or None without alphas."""
    if network.weighting == "sum":
        return None
    panels = []
    for cell_type in network.arch_cell_types():
        probs = torch.softmax(network.alphas[cell_type].detach().float().cpu(), dim=-1)
        names = network.candidates[cell_type][0]
        title = f"{caption} {cell_type if not network.shared else 'shared'} cell: softmax(alpha)".strip()
        panels.append(draw_heatmap(probs, names, title, network.active_ops(cell_type)))
    width = sum(panel.width for panel in panels)
    canvas = Image.new("RGB", (width, max(panel.height for panel in panels)), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width
    return canvas


def save_heatmap(network: SearchNetwork, path: str | Path, caption: str = "") -> Path | None:
    """Write :func:`network_heatmap` as a PNG at ``path``; returns it (None without alphas)."""
    image = network_heatmap(network, caption)
    if image is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def make_gif(frames: Sequence[str | Path], path: str | Path, frame_ms: int = 700) -> Path | None:
    """An animated GIF of the PNG ``frames`` (padded on white to the largest size), looping; the last
    frame is held three times as long. Returns the path, or None when there is no frame."""
    images = [Image.open(frame).convert("RGB") for frame in frames if Path(frame).is_file()]
    if not images:
        return None
    width, height = max(i.width for i in images), max(i.height for i in images)
    padded = []
    for image in images:
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
        padded.append(canvas)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [frame_ms] * (len(padded) - 1) + [frame_ms * 3]
    padded[0].save(path, save_all=True, append_images=padded[1:], duration=durations, loop=0)
    return path
