"""Fuzz seeds of the image-folder readers (`png`, `jpeg`): small valid files in the
variants PIL writes and torchvision's ImageFolder reads. Needs Pillow; run by
make-seeds.sh with $PYTHON (default /work/venv/bin/python, else python3)."""
import sys

from PIL import Image

C = sys.argv[1]
W, H = 6, 5


def rgb(mode):
    im = Image.new("RGB", (W, H))
    im.putdata([((x * 40) % 256, (y * 50) % 256, (x * y * 9) % 256) for y in range(H) for x in range(W)])
    return im.convert(mode)


# PNG: 8-bit gray, gray + alpha, RGB, RGBA, palette, 16-bit gray, 1-bit, Adam7 interlaced
rgb("L").save(f"{C}/png/seed-gray.png")
rgb("LA").save(f"{C}/png/seed-gray-alpha.png")
rgb("RGB").save(f"{C}/png/seed-rgb.png")
rgb("RGBA").save(f"{C}/png/seed-rgba.png")
rgb("P").save(f"{C}/png/seed-palette.png")
rgb("L").convert("I;16").save(f"{C}/png/seed-gray16.png")
rgb("1").save(f"{C}/png/seed-1bit.png")
rgb("RGB").save(f"{C}/png/seed-interlaced.png", interlace=1)
# JPEG: baseline RGB (4:2:0 and 4:4:4), grayscale, progressive, CMYK, restart markers
rgb("RGB").save(f"{C}/jpeg/seed-rgb420.jpg", quality=90)
rgb("RGB").save(f"{C}/jpeg/seed-rgb444.jpg", quality=90, subsampling=0)
rgb("L").save(f"{C}/jpeg/seed-gray.jpg", quality=90)
rgb("RGB").save(f"{C}/jpeg/seed-progressive.jpg", quality=80, progressive=True)
rgb("CMYK").save(f"{C}/jpeg/seed-cmyk.jpg", quality=90)
rgb("RGB").save(f"{C}/jpeg/seed-restart.jpg", quality=90, restart_marker_blocks=1)
