"""`compile --distill`: its flags' user errors (one stderr line, exit 2, nothing written), and in the slow tier a
distilled ternary build of the digits CNN end to end, with its manifest record, in an interpreter where PyTorch
cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import zoo
from tvmcompress.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def mlp_path(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(zoo.mlp(), path)
    return str(path)


@pytest.mark.parametrize("flags, needle", [
    (["--distill-minutes", "2"], "--distill-minutes is the budget of --distill"),
    (["--distill", "--calibration", "CAL"], "--distill fine-tunes a compressed model"),
    (["--distill", "--quantize", "int4-weight"], "--distill needs inputs to train on"),
    (["--train-data", "CAL", "--quantize", "int4-weight"], "--train-data is what --distill trains on"),
    (["--distill", "--distill-minutes", "0", "--quantize", "int4-weight", "--calibration", "CAL"],
     "distill minutes must be a positive number"),
])
def test_distill_flag_errors(mlp_path, tmp_path, capsys, flags, needle):
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, x=np.zeros((2, 32), np.float32))
    out = tmp_path / "out"
    argv = ["compile", mlp_path, "-o", str(out), *(str(calibration) if f == "CAL" else f for f in flags)]
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err and not out.exists()


# NOTE: tvm_ffi's __init__ runs `import torch` (guarded) whenever torch is installed, as this test venv has it,
# so `import tvm` alone fills sys.modules with torch. The tests therefore make torch unimportable first
# (sys.modules['torch'] = None: `import torch` raises ImportError, which tvm_ffi ignores) and check that
# distillation works without it and that nothing else loaded a torch submodule.
_BLOCK_TORCH = "import sys\nsys.modules['torch'] = None\n"


def test_distillation_modules_work_without_torch():
    """The engine's modules and a differentiated training module, in a fresh interpreter where torch cannot be
    imported (the slow test below runs a whole distilled compile so)."""
    script = _BLOCK_TORCH + (
        "import tvmcompress.api, tvmcompress.cli\n"
        "from tvmcompress.passes import distill\n"
        "from tvm import relax\n"
        "import numpy as np\n"
        "bb = relax.BlockBuilder()\n"
        "x = relax.Var('x', relax.TensorType([2, 3], 'float32'))\n"
        "with bb.function('main', [x]):\n"
        "    with bb.dataflow():\n"
        "        y = bb.emit_output(bb.emit(relax.op.matmul(x, relax.const(np.ones((3, 4), 'float32')))))\n"
        "    bb.emit_func_output(y)\n"
        "lifted = distill.lift_trainable(bb.get())\n"
        "distill.build_training_module(lifted, [], distill._mse([1.0]), [lifted.func.ret_ty])\n"
        "print(sorted(m for m in sys.modules if m.startswith('torch.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_distilled_ternary_build_records_training_without_torch(tmp_path):
    """The whole compile in a fresh interpreter where torch cannot be imported: ternary weights at 2 bits in
    weights.bin and the distillation record in the manifest (the engine is TVM's own autodiff)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "numerics"))
    from digits_models import BATCH, digits_split

    x_train, _, y_train, _ = digits_split()
    model = onnx.load(EXAMPLES / "digits_cnn.onnx")
    for value in (*model.graph.input, *model.graph.output):  # batch 40 (--input-shape), as digits_models does
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    model_path = tmp_path / "digits_cnn.onnx"
    onnx.save(model, model_path)
    train = tmp_path / "train.npz"
    np.savez(train, input=x_train[:400], label=y_train[:400].astype(np.int64))
    out = tmp_path / "out"
    script = _BLOCK_TORCH + (
        "import json, tvmcompress\n"
        "from tvmcompress.config import CompileOptions\n"
        "from tvmcompress.passes.quantize_config import QuantizeConfig\n"
        "from tvmcompress.passes.distill_config import DistillConfig\n"
        f"options = CompileOptions.create(input_shapes={{'input': [{BATCH}, 1, 8, 8]}}, separate_weights=True,\n"
        "    quantize=QuantizeConfig(mode='ternary-weight'), train_data=sys.argv[2],\n"
        "    distill=DistillConfig(epochs=2, reconstruct_epochs=1, minutes=60))\n"
        "tvmcompress.compile(sys.argv[1], 'host', output=sys.argv[3], options=options)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(model_path), str(train), str(out)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["distillation"]
    assert record["steps"] == 3 * 10 and record["labels"] is True and len(record["grid_layers"]) == 3
    assert [p["name"] for p in record["phases"]] == ["reconstruct", "output"]
    assert {"name": "tvmcompress.distill", "options": record["config"]} in manifest["passes"]
    fp32_weight_bytes = sum(np.prod(i.dims) * 4 for i in model.graph.initializer)
    # 2-bit codes + a float alpha per channel; biases stay float32.
    assert manifest["sizes"]["weights_file_bytes"] < fp32_weight_bytes / 8
