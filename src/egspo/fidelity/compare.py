"""One comparison per (case, quantity): max absolute error and max error relative to the reference's largest entry.

``rel = max|ours - ref| / max|ref|`` (``max|ref| = 0``: the absolute error itself), so a tensor with small entries
next to large ones (a gradient) is judged on its scale. Integer and bool tensors must be identical; their ``abs``
is the number of differing entries. A quantity passes when ``rel <= tolerance`` (1e-6 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOLERANCE = 1e-6


@dataclass
class Comparison:
    case: str
    quantity: str
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        status = "ok  " if self.ok else "FAIL"
        note = f"  ({self.note})" if self.note else ""
        return (f"{status} {self.case:<26} {self.quantity:<40} max_abs {self.max_abs:.3e}  "
                f"max_rel {self.max_rel:.3e}{note}")


def compare(case: str, quantity: str, ours, ref, tolerance: float = TOLERANCE) -> Comparison:
    """Compare ``ours`` with the reference ``ref`` (tensors, numbers or nested lists of numbers)."""
    ours_t, ref_t = torch.as_tensor(ours).detach(), torch.as_tensor(ref)
    if ref_t.dtype in (torch.float16, torch.bfloat16):
        ref_t = ref_t.float()
    if ours_t.numel() != ref_t.numel():
        return Comparison(case, quantity, float("inf"), float("inf"), False,
                          f"shape {list(ours_t.shape)} vs reference {list(ref_t.shape)}")
    ours_t = ours_t.reshape(ref_t.shape).cpu()
    ref_t = ref_t.cpu()
    if not ref_t.is_floating_point():
        differ = int((ours_t.to(ref_t.dtype) != ref_t).sum())
        return Comparison(case, quantity, float(differ), float(differ > 0), differ == 0,
                          "" if differ == 0 else f"{differ} of {ref_t.numel()} entries differ")
    a, b = ours_t.double(), ref_t.double()
    if not bool(torch.isfinite(a).all()):
        return Comparison(case, quantity, float("inf"), float("inf"), False, "non-finite values")
    max_abs = float((a - b).abs().max()) if b.numel() else 0.0
    scale = float(b.abs().max()) if b.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    return Comparison(case, quantity, max_abs, max_rel, max_rel <= tolerance)
