"""A simulated CUDA device on the CPU: the `--cuda` code paths tested without a GPU.

Inside `FakeCuda()`, `torch.cuda.is_available()` is True and a tensor sent to `cuda` (`.to("cuda")`, `device="cuda"`, a
module's `.to(device)`) becomes a `CudaTensor`: CPU memory underneath, but it says `device == cuda:0`, and it refuses
what a real CUDA tensor refuses, so that code which would fail on a GPU fails here:
- an op that mixes it with a CPU tensor of one or more dimensions (CUDA takes 0-dim CPU tensors as scalars, and CPU
  index arrays in indexing), "Expected all tensors to be on the same device";
- `.numpy()` and `np.asarray(...)` of it, "can't convert cuda:0 device type tensor to numpy".
Whatever an op computes from a CudaTensor is one too; `.cpu()` and `.to("cpu")` give plain tensors back. The mode
counts host-to-device copies (`to_device`) and device-to-host reads (`to_host`: `.cpu()`, `.item()`, `.tolist()`).
`torch.save` stores CudaTensors as plain tensors, as a real save stores CUDA tensors that load with map_location.
"""

import contextlib
import importlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
Tensor = torch.Tensor


class CudaTensor(torch.Tensor):
    """A CPU tensor that says it lives on cuda:0 (see the module docstring)."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # torch treats it as a plain tensor

    @property
    def device(self) -> torch.device:
        return CUDA

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False


def plain(value):
    return value.as_subclass(torch.Tensor) if isinstance(value, CudaTensor) else value


def on_cuda(value):
    return value if isinstance(value, CudaTensor) or not isinstance(value, torch.Tensor) else \
        value.as_subclass(CudaTensor)


def is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


class FakeCuda(TorchFunctionMode):
    """The simulated device; use as `with FakeCuda() as cuda:` (see the module docstring)."""

    TRANSFERS = {Tensor.to, Tensor.copy_, Tensor.cuda, Tensor.cpu}  # they may take tensors of both devices

    def __init__(self):
        super().__init__()
        self.to_device = self.to_host = 0
        self.patches = contextlib.ExitStack()

    def __enter__(self):
        stack = self.patches
        for name, value in [("is_available", lambda: True), ("device_count", lambda: 1),
                            ("mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30)),  # an H100
                            ("synchronize", lambda device=None: None)]:
            stack.enter_context(_patched(torch.cuda, name, value))
        save = torch.save
        stack.enter_context(_patched(torch, "save", lambda obj, *args, **kwargs: save(tree_map(plain, obj), *args,
                                                                                      **kwargs)))
        # clip_grad_norm_ groups the gradients by the device that C++ sees (the CPU underneath) and sends its clipping
        # factor there, which reads as a copy to the host; on a GPU the group is on the device and nothing is copied
        clip_grad = importlib.import_module("torch.nn.utils.clip_grad")
        group = clip_grad._group_tensors_by_device_and_dtype
        stack.enter_context(_patched(clip_grad, "_group_tensors_by_device_and_dtype", lambda *args, **kwargs: {
            (CUDA if isinstance(tensors[0][0], CudaTensor) else device, dtype): (tensors, indices)
            for (device, dtype), (tensors, indices) in group(*args, **kwargs).items()}))
        # a module's .to(device) replaces its parameters by new ones (CudaTensors) instead of swapping their data
        stack.enter_context(_patched_future(True))
        return super().__enter__()

    def __exit__(self, *exception):
        super().__exit__(*exception)
        self.patches.close()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch._has_compatible_shallow_copy_type:  # module.to()'s bookkeeping, no computation
            return func(*args, **kwargs)
        tensors = [leaf for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, torch.Tensor)]
        from_cuda = any(isinstance(tensor, CudaTensor) for tensor in tensors)
        if func in (Tensor.numpy, Tensor.__array__) and from_cuda:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                            "host memory first.")
        if from_cuda and func not in self.TRANSFERS:
            checked = [args[0], args[2]] if func is Tensor.__setitem__ else \
                [] if func is Tensor.__getitem__ else tensors  # host index arrays are fine
            if any(isinstance(t, torch.Tensor) and not isinstance(t, CudaTensor) and t.dim() > 0 for t in checked):
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"cuda:0 and cpu! ({getattr(func, '__name__', func)})")
        to_cuda = is_cuda(kwargs.get("device")) or func is Tensor.cuda or func is Tensor.to and (
            any(is_cuda(a) for a in args[1:] if isinstance(a, (str, torch.device))) or is_cuda(kwargs.get("device")))
        to_cpu = func is Tensor.cpu or func is Tensor.to and from_cuda and not to_cuda and any(
            isinstance(a, (str, torch.device)) for a in [*args[1:], kwargs.get("device")])
        if "device" in kwargs and is_cuda(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func is Tensor.to:
            args = tuple("cpu" if isinstance(a, (str, torch.device)) and is_cuda(a) else a for a in args)
        if func is Tensor.cuda:
            func, args, kwargs = Tensor.clone, args[:1], {}
        if to_cuda and not from_cuda:
            self.to_device += 1
        if from_cuda and (to_cpu or func in (Tensor.item, Tensor.tolist)):
            self.to_host += 1
        result = func(*args, **kwargs)
        if to_cpu:
            return tree_map(plain, result) if not isinstance(result, CudaTensor) else plain(result).clone()
        return tree_map(on_cuda, result) if to_cuda or from_cuda else result  # a parameter's .grad included


@contextlib.contextmanager
def _patched(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@contextlib.contextmanager
def _patched_future(value: bool):
    old = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(value)
    try:
        yield
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(old)
