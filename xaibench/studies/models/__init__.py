"""The three reference networks of the benchmark; training.py trains them (train, evaluate,
load_trained: safetensors + JSON metadata).

    EnsoDense          dense 8-8-2 classifier of flattened SST maps (Toms et al. 2020)
    ConvectionCNN      3D CNN over 5 frames x 2 GOES channels (Lee et al. 2021; layers chosen here)
    RadarEncoderDecoder  GREMLIN-style encoder-decoder, N blocks each way (Hilburn et al. 2021)
    RadarViT           a small vision transformer for the same radar task (attention written from
                       its parts; the transformer reference case)
    GroundTruthDense   dense 512-256-128-64-32-16-1 regression net of the ground-truth benchmark
                       (Mamalakis et al. 2022)

Every CNN and dense network is a plain nn.Sequential subclass built from standard torch.nn layers;
RadarViT is a small nn.Module of Linear, LayerNorm, GELU, matrix products and softmax. The native
LRP engine traces each of them, and every native LRP method conserves relevance on it.
"""

from xaibench.studies.models.convection import ConvectionCNN
from xaibench.studies.models.enso import EnsoDense
from xaibench.studies.models.groundtruth import GroundTruthDense
from xaibench.studies.models.radar import RadarEncoderDecoder, weighted_mse
from xaibench.studies.models.radar_vit import RadarViT

#: model name -> constructor, for the benchmark and the CLI
REGISTRY = {
    "enso": EnsoDense,
    "convection": ConvectionCNN,
    "radar": RadarEncoderDecoder,
    "radar_vit": RadarViT,
    "groundtruth": GroundTruthDense,
}

__all__ = ["REGISTRY", "ConvectionCNN", "EnsoDense", "GroundTruthDense", "RadarEncoderDecoder", "RadarViT",
           "weighted_mse"]
