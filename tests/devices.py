"""The device the device-aware tests use: CUDA when this machine has it, else the CPU (CI)."""

import torch

TEST_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
