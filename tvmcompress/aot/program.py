"""The AOT program of a model: its kernels' calls in order, every tensor they touch, and the arena layout.

Read from the VM-ready `main` of the module our CPU pipeline lowers (the form the Relax VM's code generator
reads): after StaticPlanBlockMemory and VM lowering it is one straight-line block of

    R.vm.alloc_storage(R.shape([bytes]), ...)            a planned storage     -> an arena region
    R.vm.alloc_tensor(storage, offset, R.shape(s), dt)   a view of a storage   -> arena offset + offset
    R.call_packed("vm.builtin.reshape", x, R.shape(s))   the same bytes, another shape
    kernel(args..., outs...)                             a call of a TIR PrimFunc (destination passing)
    R.call_packed("vm.builtin.check_tensor_info"/...)    argument checks         -> done by the C API
    R.vm.kill_object(x), R.null_value()                  VM bookkeeping           -> nothing
and returns one tensor or a tuple of them. Anything else (control flow, dynamic shapes, extern packed calls)
is refused with a message that points at the VM bundle, which runs everything.

Arena layout: each planned storage gets its own 64-byte aligned region, in plan order; then the kernels'
scratch (TVMBackendAllocWorkspace, the largest single kernel's, as tvmcompress/memory_plan.py counts it);
the storages that hold outputs are among the planned ones. So the arena is exactly the memory plan's
`peak_activation_bytes` whenever every storage size is a multiple of 64 (alignment padding otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm

from ..errors import TvmcompressError

ALIGN = 64  # TVM's allocator alignment; kernels may rely on it for buffers they did not get as arguments

_SKIPPED_OPS = {"relax.vm.kill_object", "relax.null_value"}
_SKIPPED_PACKED = {"vm.builtin.check_tensor_info", "vm.builtin.match_shape", "vm.builtin.check_tuple_info"}


@dataclass(frozen=True)
class Tensor:
    kind: str  # "input" (where = input index), "arena" (where = byte offset), "const" (where = const index)
    where: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _itemsize(self.dtype)


@dataclass(frozen=True)
class KernelCall:
    kernel: str  # the PrimFunc's global symbol
    args: tuple[int, ...]  # tensor indices


@dataclass
class AotProgram:
    tensors: list[Tensor] = field(default_factory=list)
    calls: list[KernelCall] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    storage_bytes: list[int] = field(default_factory=list)  # the plan's storages, in arena order
    workspace_offset: int = 0
    workspace_bytes: int = 0
    arena_bytes: int = 0

    @property
    def const_bytes(self) -> int:
        return sum(array.nbytes for array in self.consts)

    def peak_call(self) -> tuple[str, int]:
        """(kernel, bytes) of the call whose tensors in the arena are largest: the layer to name when the
        arena is over budget."""
        best, best_bytes = "", -1
        for call in self.calls:
            live = sum(self.tensors[i].nbytes for i in set(call.args) if self.tensors[i].kind == "arena")
            if live > best_bytes:
                best, best_bytes = call.kernel, live
        return best, best_bytes


def _itemsize(dtype: str) -> int:
    dt = tvm.DataType(dtype)
    return max(1, (dt.bits * dt.lanes + 7) // 8)


def _round_up(value: int, align: int = ALIGN) -> int:
    return (value + align - 1) // align * align


def _int(expr) -> int:
    if isinstance(expr, tvm.tirx.IntImm):
        return int(expr.value)
    raise TvmcompressError(f"the AOT executor needs static shapes, found {expr}: recompile with --input-shape")


def _shape(shape_expr) -> tuple[int, ...]:
    return tuple(_int(v) for v in shape_expr.values)


def _unsupported(what: str) -> TvmcompressError:
    return TvmcompressError(f"the AOT executor does not support {what}: export without --aot (the VM bundle runs it)")


def extract_program(lowered: tvm.IRModule, workspace_bytes: int) -> AotProgram:
    """The AOT program of `lowered` (the VM-ready module); `workspace_bytes`: the memory plan's kernel scratch."""
    func = lowered["main"]
    if len(func.body.blocks) != 1:
        raise _unsupported("control flow in main")
    program = AotProgram()
    values: dict = {}  # relax Var -> tensor index
    storages: dict = {}  # relax Var of an alloc_storage -> its index in program.storage_bytes
    consts: list = []  # (a constant's tensor, tensor index): kernels sharing a weight share its bytes

    def add_tensor(tensor: Tensor) -> int:
        program.tensors.append(tensor)
        return len(program.tensors) - 1

    for index, param in enumerate(func.params):
        ty = param.ty
        if not hasattr(ty, "shape") or ty.shape is None:
            raise _unsupported(f"the non-tensor input '{param.name}'")
        values[param] = add_tensor(Tensor("input", index, _shape(ty.shape), str(ty.dtype)))

    def tensor_of(expr) -> int:
        if isinstance(expr, tvm.ir.expr.Var) and expr in values:
            return values[expr]
        if isinstance(expr, tvm.ir.expr.Constant) and isinstance(expr.value, tvm.runtime.Tensor):
            for known, idx in consts:
                if known.same_as(expr.value):
                    return idx
            array = expr.value.numpy()
            program.consts.append(np.ascontiguousarray(array))
            idx = add_tensor(Tensor("const", len(program.consts) - 1, tuple(array.shape), str(array.dtype)))
            consts.append((expr.value, idx))
            return idx
        raise _unsupported(f"the kernel argument {expr}")

    for binding in func.body.blocks[0].bindings:
        call = binding.value
        if not isinstance(call, tvm.ir.expr.Call):
            if isinstance(call, tvm.ir.expr.Var) and call in values:  # an alias
                values[binding.var] = values[call]
                continue
            raise _unsupported(f"the binding {binding.var.name} = {call}")
        op = call.op
        if isinstance(op, tvm.ir.Op):
            if op.name in _SKIPPED_OPS:
                continue
            if op.name == "relax.vm.alloc_storage":
                storages[binding.var] = len(program.storage_bytes)
                program.storage_bytes.append(_int(call.args[0].values[0]))
                continue
            if op.name == "relax.vm.alloc_tensor":
                # `where` holds (storage index, offset in it) until the layout below is known.
                located = (storages[call.args[0]], _int(call.args[1]))
                values[binding.var] = add_tensor(Tensor("arena", located, _shape(call.args[2]), str(call.args[3].value)))
                continue
            raise _unsupported(f"the operator {op.name}")
        if isinstance(op, tvm.ir.expr.GlobalVar):
            args = tuple(tensor_of(arg) for arg in call.args)
            program.calls.append(KernelCall(op.name_hint, args))
            continue
        name = getattr(op, "global_symbol", None)
        if name in _SKIPPED_PACKED:
            continue
        if name == "vm.builtin.reshape":
            source = program.tensors[tensor_of(call.args[0])]
            shape = _shape(call.args[1])
            values[binding.var] = add_tensor(Tensor(source.kind, source.where, shape, source.dtype))
            continue
        raise _unsupported(f"the call {name or op}")

    returned = func.body.body
    fields = list(returned.fields) if isinstance(returned, tvm.ir.expr.Tuple) else [returned]
    program.outputs = [tensor_of(expr) for expr in fields]
    _lay_out_arena(program, workspace_bytes)
    return program


def _lay_out_arena(program: AotProgram, workspace_bytes: int) -> None:
    """Storages whose size is a multiple of ALIGN first, then the workspace, then the others: every region
    starts aligned and only regions followed by another are padded, so for the usual plans (float32
    activations in multiples of 16 elements, a small output last) the arena is exactly the plan's peak."""
    sizes = program.storage_bytes
    order = sorted(range(len(sizes)), key=lambda i: sizes[i] % ALIGN != 0)
    regions = [("storage", i, sizes[i]) for i in order if sizes[i] % ALIGN == 0]
    regions.append(("workspace", -1, workspace_bytes))
    regions += [("storage", i, sizes[i]) for i in order if sizes[i] % ALIGN != 0]
    starts: dict[int, int] = {}
    offset = 0
    for kind, index, size in regions:
        offset = _round_up(offset)
        if kind == "workspace":
            program.workspace_offset, program.workspace_bytes = offset, size
        else:
            starts[index] = offset
        offset += size
    program.arena_bytes = offset
    program.storage_bytes = [sizes[i] for i in order]
    program.tensors = [
        Tensor(t.kind, starts[t.where[0]] + t.where[1], t.shape, t.dtype) if t.kind == "arena" else t
        for t in program.tensors
    ]


def dlpack_dtype(dtype: str) -> tuple[int, int]:
    """(DLPack type code, bits) of a dtype name, as TVM's kernels check them (bool: kDLBool, 8 bits)."""
    dt = tvm.DataType(dtype)
    if dt.lanes != 1:
        raise _unsupported(f"tensors of dtype {dtype}")
    return int(dt.type_code), int(dt.bits)
