"""The LEAD model: vision encoders, experts, layer-wise injection, decoder backbones, grounding policy, losses,
and their assembly (`leadrrg.model.lead.LeadModel`)."""
