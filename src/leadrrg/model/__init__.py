"""The LEAD model: vision encoders, experts, layer-wise injection, decoder backbones, and their assembly."""

from leadrrg.model.lead import LeadModel, StudyContext

__all__ = ["LeadModel", "StudyContext"]
