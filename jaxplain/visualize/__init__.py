"""Feature visualization: objectives, parameterizations, regularizers, transforms, render,
semantic dictionaries, site attribution and NMF neuron groups."""

from jaxplain.visualize._blocks import SemanticDictionary as SemanticDictionary
from jaxplain.visualize._blocks import channel_attribution as channel_attribution
from jaxplain.visualize._blocks import semantic_dictionary as semantic_dictionary
from jaxplain.visualize._blocks import site_attribution as site_attribution
from jaxplain.visualize._blocks import spatial_attribution as spatial_attribution
from jaxplain.visualize._nmf import NMF as NMF
from jaxplain.visualize._nmf import NeuronGroups as NeuronGroups
from jaxplain.visualize._nmf import neuron_groups as neuron_groups
from jaxplain.visualize._nmf import nmf as nmf
from jaxplain.visualize._objectives import Objective as Objective
from jaxplain.visualize._objectives import channel as channel
from jaxplain.visualize._objectives import class_logit as class_logit
from jaxplain.visualize._objectives import class_probability as class_probability
from jaxplain.visualize._cosine import cosine_direction as cosine_direction
from jaxplain.visualize._cosine import cosine_direction_neuron as cosine_direction_neuron
from jaxplain.visualize._objectives import direction as direction
from jaxplain.visualize._objectives import diversity as diversity
from jaxplain.visualize._objectives import layer as layer
from jaxplain.visualize._objectives import mean_pairwise_similarity as mean_pairwise_similarity
from jaxplain.visualize._objectives import neuron as neuron
from jaxplain.visualize._objectives import stack as stack
from jaxplain.visualize._param import CodeSpace as CodeSpace
from jaxplain.visualize._param import Fourier as Fourier
from jaxplain.visualize._param import Pixel as Pixel
from jaxplain.visualize._param import colour_decorrelation as colour_decorrelation
from jaxplain.visualize._regularizers import L1 as L1
from jaxplain.visualize._regularizers import L2 as L2
from jaxplain.visualize._regularizers import Blur as Blur
from jaxplain.visualize._regularizers import GaussianPrior as GaussianPrior
from jaxplain.visualize._regularizers import LogDensity as LogDensity
from jaxplain.visualize._regularizers import TotalVariation as TotalVariation
from jaxplain.visualize._regularizers import blur as blur
from jaxplain.visualize._regularizers import gaussian_prior as gaussian_prior
from jaxplain.visualize._render import Rendering as Rendering
from jaxplain.visualize._render import render as render
from jaxplain.visualize._transforms import Jitter as Jitter
from jaxplain.visualize._transforms import Pad as Pad
from jaxplain.visualize._transforms import Rotate as Rotate
from jaxplain.visualize._transforms import Scale as Scale
from jaxplain.visualize._transforms import standard_transforms as standard_transforms

__all__ = [
    "L1", "L2", "NMF", "Blur", "CodeSpace", "Fourier", "GaussianPrior", "Jitter", "LogDensity",
    "NeuronGroups", "Objective", "Pad", "Pixel", "Rendering", "Rotate", "Scale",
    "SemanticDictionary", "TotalVariation", "blur", "channel", "channel_attribution",
    "class_logit", "class_probability", "colour_decorrelation", "cosine_direction",
    "cosine_direction_neuron", "direction", "diversity", "gaussian_prior", "layer",
    "mean_pairwise_similarity", "neuron", "neuron_groups", "nmf", "render",
    "semantic_dictionary", "site_attribution", "spatial_attribution", "stack",
    "standard_transforms",
]
