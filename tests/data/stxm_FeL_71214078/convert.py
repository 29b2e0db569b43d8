"""Convert the shared ALS stack into the compact test files: the stack as NeXus NXstxm, SubPreEdge as TIFF.

Usage: ``python convert.py SOURCE_DIR THIS_DIR`` (SOURCE_DIR holds 71214078.hdr, its .xim images and SubPreEdge/).
"""

import sys

import h5py
import tifffile

from xbeam_bluesky.spectra.stack_io import parse_axis2000_header, read_axis2000

src, dst = sys.argv[1], sys.argv[2]
raw = read_axis2000(f"{src}/71214078.hdr")
header = parse_axis2000_header(f"{src}/71214078.hdr")
with h5py.File(f"{dst}/71214078.nxs", "w") as f:
    entry = f.create_group("entry1")
    entry.attrs["NX_class"] = "NXentry"
    entry["definition"] = "NXstxm"
    entry["title"] = "71214078 Fe L-edge stack (ALS, aligned)"
    data = entry.create_group("data")
    data.attrs.update({"NX_class": "NXdata", "signal": "data", "axes": ["energy", "sample_y", "sample_x"]})
    data.create_dataset("data", data=raw.frames, compression="gzip", compression_opts=9, shuffle=True)
    for name, values, unit in (
        ("energy", raw.energies, "eV"),
        ("sample_x", header["x_um"], "um"),
        ("sample_y", header["y_um"], "um"),
        ("count_time", header["dwell_ms"], "ms"),
    ):
        data[name] = values
        data[name].attrs["units"] = unit
    data["stxm_scan_type"] = "sample image stack"
sub = read_axis2000(f"{src}/SubPreEdge/71214078.hdr")
tifffile.imwrite(f"{dst}/SubPreEdge/71214078.tif", sub.frames, compression="zlib")
