"""LightningModules and backbones."""

from lit_xai.models.backbones import BackboneError, build_backbone
from lit_xai.models.classifier import ClassifierModule, ConfigurationError

__all__ = ["BackboneError", "ClassifierModule", "ConfigurationError", "build_backbone"]
