"""Convert the shared ALS stack into the compact test files (NXstxm HDF5, multi-page TIFF)."""
import sys
import h5py, numpy as np, tifffile
from xbeam_bluesky.spectra.stack_io import parse_axis2000_header, read_axis2000
src, dst = sys.argv[1], sys.argv[2]
raw = read_axis2000(f"{src}/71214078.hdr")
hdr = parse_axis2000_header(f"{src}/71214078.hdr")
with h5py.File(f"{dst}/71214078.nxs", "w") as f:
    e = f.create_group("entry1"); e.attrs["NX_class"] = "NXentry"
    e["definition"] = "NXstxm"; e["title"] = "71214078 Fe L-edge stack (ALS, aligned)"
    d = e.create_group("data"); d.attrs["NX_class"] = "NXdata"; d.attrs["signal"] = "data"
    d.attrs["axes"] = ["energy", "sample_y", "sample_x"]
    d.create_dataset("data", data=raw.frames, compression="gzip", compression_opts=9, shuffle=True)
    d["energy"] = raw.energies; d["energy"].attrs["units"] = "eV"
    d["sample_x"] = hdr["x_um"]; d["sample_x"].attrs["units"] = "um"
    d["sample_y"] = hdr["y_um"]; d["sample_y"].attrs["units"] = "um"
    d["count_time"] = hdr["dwell_ms"]; d["count_time"].attrs["units"] = "ms"
    d["stxm_scan_type"] = "sample image stack"
sub = read_axis2000(f"{src}/SubPreEdge/71214078.hdr")
tifffile.imwrite(f"{dst}/SubPreEdge/71214078.tif", sub.frames, compression="zlib")
