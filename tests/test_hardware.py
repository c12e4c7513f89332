"""studykit.hardware: the CPU name and the bf16 check."""
import torch

from studykit import hardware


def test_cpu_name_is_a_non_empty_string():
    assert isinstance(hardware.cpu_name(), str) and hardware.cpu_name()


def test_cpu_supports_bf16_follows_torchs_checks(monkeypatch):
    monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)  # detection itself, not the forced kind
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    for avx512_bf16, amx, expected in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert hardware.cpu_supports_bf16() is expected, (avx512_bf16, amx)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert hardware.cpu_supports_bf16() is False  # no oneDNN: no native bf16 kernels


def test_cpu_supports_bf16_without_the_private_probes(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert hardware.cpu_supports_bf16() is False


def test_cpu_supports_bf16_on_this_machine_agrees_with_torch(monkeypatch):
    monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)  # detection itself, not the forced kind
    expected = torch.backends.mkldnn.is_available() and (torch.cpu._is_avx512_bf16_supported()
                                                         or torch.cpu._is_amx_tile_supported())
    assert hardware.cpu_supports_bf16() == expected
