"""The `--cuda` code paths of the four scripts, on a simulated CUDA device (tests/fake_cuda.py): training, resuming,
--eval-checkpoint, dqn_atari.py's --replay-on-gpu with --save-replay, and an env with float64 observations. Any op
that mixes a device tensor with a host one, or reads a device tensor into NumPy, fails as it would on a GPU. The
simulator is tested first, so that it cannot pass by doing nothing."""

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import settings
from fake_cuda import CudaTensor, FakeCuda

# ------------------------------------------------------------------------------------------------- the simulator


def test_the_simulated_device_refuses_what_cuda_refuses():
    with FakeCuda():
        assert torch.cuda.is_available()
        on_gpu = torch.ones(3, device="cuda")
        assert isinstance(on_gpu, CudaTensor) and on_gpu.device.type == "cuda"
        with pytest.raises(RuntimeError, match="same device"):
            on_gpu + torch.ones(3)  # a planted mismatch: a host tensor of one dimension
        assert (on_gpu + torch.tensor(2.0)).device.type == "cuda"  # a 0-dim host tensor is a scalar, as in CUDA
        with pytest.raises(TypeError, match="cuda:0 device type tensor to numpy"):
            on_gpu.numpy()
        with pytest.raises(TypeError, match="cuda:0 device type tensor to numpy"):
            np.asarray(on_gpu * 2)  # what an op computes from a device tensor stays there
        back = on_gpu.cpu()
        assert type(back) is torch.Tensor and back.numpy().tolist() == [1.0, 1.0, 1.0]
        network = torch.nn.Linear(3, 2).to(torch.device("cuda"))
        assert all(isinstance(parameter, CudaTensor) for parameter in network.parameters())
        with pytest.raises(RuntimeError, match="same device"):
            network(torch.ones(1, 3))  # a host batch into a device network
        network(torch.ones(1, 3).to("cuda")).sum().backward()
        assert all(isinstance(parameter.grad, CudaTensor) for parameter in network.parameters())
    assert not isinstance(torch.ones(3) + 1, CudaTensor)  # outside, nothing is simulated


def test_the_simulated_device_counts_copies_to_it_and_reads_from_it():
    with FakeCuda() as cuda:
        on_gpu = torch.from_numpy(np.ones(4, np.float32)).to("cuda")
        on_gpu.sum().item()
        on_gpu.cpu()
    assert (cuda.to_device, cuda.to_host) == (1, 2)


# --------------------------------------------------------------------------------------------------- the scripts

ENVS = {"dqn": "CartPole-v1", "dqn_lunar": "LunarLander-v3", "dqn_atari": "PongNoFrameskip-v4",
        "double_dueling_per_dqn": "CartPole-v1"}


def short(module, tmp_path: Path, **overrides):
    """A short --cuda run on the simulated device: its summary."""
    values = dict(env_id=ENVS[module.__name__], total_timesteps=300, learning_starts=200, batch_size=8,
                  buffer_size=600, hidden_sizes=(16,), eval_frequency=300, eval_episodes=1, cuda=True,
                  runs_dir=str(tmp_path)) | overrides
    with FakeCuda():
        return module.main(*settings(module, **values))


@pytest.mark.parametrize("script", list(ENVS))
def test_each_script_trains_resumes_and_evaluates_on_the_device(script, tmp_path):
    module = importlib.import_module(script)
    first = short(module, tmp_path, save_replay=True)
    assert first["status"] == "finished", first
    run_dir = Path(first["run_dir"])
    with FakeCuda():
        resumed = module.main(*module.parse_command_line(["--resume", str(run_dir), "--total-timesteps", "400"]))
        evaluated = module.main(*module.parse_command_line(["--eval-checkpoint", str(run_dir), "--eval-episodes",
                                                            "1"]))
    assert resumed["status"] == "finished" and resumed["global_step"] == 400
    assert evaluated["status"] == "evaluated"
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # saved from the device, loads on the host
    assert all(type(tensor) is torch.Tensor for tensor in checkpoint["state"]["q_network"].values())


def test_the_frame_replay_on_the_device_saves_and_resumes(tmp_path):
    import dqn_atari

    first = short(dqn_atari, tmp_path, replay_on_gpu=True, save_replay=True)
    assert first["status"] == "finished"
    with FakeCuda():
        resumed = dqn_atari.main(*dqn_atari.parse_command_line(["--resume", first["run_dir"], "--total-timesteps",
                                                                "400"]))
    assert resumed["status"] == "finished" and resumed["replay_size"] > first["replay_size"]


@pytest.mark.parametrize("script", list(ENVS))
def test_an_update_reads_nothing_back_from_the_device_but_every_100th_its_loss_and_mean_q(script, tmp_path):
    module = importlib.import_module(script)
    # 500 updates, one an env step; every action random (epsilon 1), so that no action reads the device
    values = dict(env_id=ENVS[script], total_timesteps=700, learning_starts=200, batch_size=8, buffer_size=700,
                  hidden_sizes=(16,), train_frequency=1, start_e=1.0, end_e=1.0, eval_epsilon=1.0, save_model=False,
                  eval_frequency=700, eval_episodes=1, cuda=True, runs_dir=str(tmp_path))
    with FakeCuda() as cuda:
        assert module.main(*settings(module, **values))["status"] == "finished"
    # one read per logging (the loss and the mean Q together); prioritized replay reads each update's TD errors
    assert cuda.to_host == 500 // 100 + (500 if script == "double_dueling_per_dqn" else 0)


@pytest.mark.parametrize("script", ["dqn", "dqn_lunar", "double_dueling_per_dqn"])
def test_an_env_with_float64_observations_trains_on_the_device(script, tmp_path):
    summary = short(importlib.import_module(script), tmp_path, env_id="Float64Obs-v0")
    assert summary["status"] == "finished"


def test_saving_a_device_replay_that_host_memory_cannot_hold_is_refused_before_any_work(tmp_path, monkeypatch):
    import io

    import dqn_atari

    def small_host(path, *args, **kwargs):  # a host with 1 GB available
        if str(path) == "/proc/meminfo":
            return io.StringIO("MemAvailable: 1000000 kB\n")
        return open(path, *args, **kwargs)

    monkeypatch.setattr(dqn_atari, "open", small_host, raising=False)
    frames = 1_200_000_000 // dqn_atari.FrameReplayBuffer.bytes_needed(1)  # 1.2 GB: fits the simulated GPU only
    with pytest.raises(dqn_atari.ConfigError, match="needs 1.2 GB and the machine has 1.0 GB available: lower "
                                                    "--buffer-size or leave out --save-replay"):
        short(dqn_atari, tmp_path / "runs", replay_on_gpu=True, save_replay=True, buffer_size=frames)
    assert not (tmp_path / "runs").exists()
    assert short(dqn_atari, tmp_path / "runs", replay_on_gpu=True, buffer_size=frames)["status"] == "finished"
