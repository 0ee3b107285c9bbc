"""Frame stamps: each rendered frame carries its own number in its pixels, so tests can read back
which source frame every output frame shows (order, duplicates and gaps at each join of a stitch).

A stamp is a 8 × 3 grid of 8 px blocks in the top-left corner, white for a 1 bit, black for a 0:
bits 0-15 are the frame's index in its render (wrapping at 65,536: over an hour at 16 fps), bits
16-23 a tag telling renders apart (the emulator numbers its renders). Blocks this size on the 8 px
grid survive H.264 at the emulator's quality with wide margins, and drawing them with ``drawbox``
costs next to nothing beside the encode.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 8  # px per bit, on H.264's 8 px transform grid
COLUMNS = 8
FRAME_BITS = 16
TAG_BITS = 8
ROWS = (FRAME_BITS + TAG_BITS) // COLUMNS
WIDTH, HEIGHT = COLUMNS * BLOCK, ROWS * BLOCK  # 64 × 24 px: fits the smallest portrait ingest accepts


@dataclass(frozen=True)
class Stamp:
    tag: int
    frame: int


def _block(bit: int) -> tuple[int, int]:
    return (bit % COLUMNS) * BLOCK, (bit // COLUMNS) * BLOCK


def drawbox_filter(tag: int) -> str:
    """An ffmpeg filter chain (for a yuv420p stream) drawing each frame's stamp: the frame number is
    ``n``, the filter's own count of the frames it has seen, so the chain must see every frame."""
    if not 0 <= tag < 2**TAG_BITS:
        raise ValueError(f"tag must be 0..{2**TAG_BITS - 1}")
    boxes = [f"drawbox=x=0:y=0:w={WIDTH}:h={HEIGHT}:color=black:t=fill"]
    for bit in range(FRAME_BITS):
        x, y = _block(bit)
        boxes.append(f"drawbox=x={x}:y={y}:w={BLOCK}:h={BLOCK}:color=white:t=fill"
                     f":enable='mod(floor(n/{2**bit}),2)'")
    for bit in range(TAG_BITS):
        if tag >> bit & 1:
            x, y = _block(FRAME_BITS + bit)
            boxes.append(f"drawbox=x={x}:y={y}:w={BLOCK}:h={BLOCK}:color=white:t=fill")
    return ",".join(boxes)


def read(gray: bytes | memoryview, stride: int = WIDTH) -> Stamp:
    """The stamp in one frame's top-left ``WIDTH`` × ``HEIGHT`` gray pixels (rows ``stride`` bytes
    apart). Each block is read at its centre; a centre neither clearly dark nor clearly light means
    the pixels are no stamp (or the video was damaged), and raises ValueError."""
    value = 0
    for bit in range(FRAME_BITS + TAG_BITS):
        x, y = _block(bit)
        level = gray[(y + BLOCK // 2) * stride + x + BLOCK // 2]
        if 64 < level < 192:
            raise ValueError(f"no stamp here: bit {bit} reads {level}, neither dark nor light")
        value |= (level >= 128) << bit
    return Stamp(tag=value >> FRAME_BITS, frame=value & (2**FRAME_BITS - 1))
