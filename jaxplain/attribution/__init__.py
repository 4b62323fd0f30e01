"""Input and site attributions: every method is ``method(f, x, target, *, options)``."""

from jaxplain.attribution._attention import attention_rollout as attention_rollout
from jaxplain.attribution._attention import attention_sites as attention_sites
from jaxplain.attribution._attention import gradient_weighted_rollout as gradient_weighted_rollout
from jaxplain.attribution._attnlrp import attn_lrp as attn_lrp
from jaxplain.attribution._cam import grad_cam as grad_cam
from jaxplain.attribution._cam import grad_cam_plus_plus as grad_cam_plus_plus
from jaxplain.attribution._cam import guided_grad_cam as guided_grad_cam
from jaxplain.attribution._cam import score_cam as score_cam
from jaxplain.attribution._expected import deeplift_shap as deeplift_shap
from jaxplain.attribution._expected import gradient_shap as gradient_shap
from jaxplain.attribution._gradient import gradient as gradient
from jaxplain.attribution._gradient import gradient_x_input as gradient_x_input
from jaxplain.attribution._integrated import completeness_delta as completeness_delta
from jaxplain.attribution._integrated import integrated_gradients as integrated_gradients
from jaxplain.attribution._lrp import lrp as lrp
from jaxplain.attribution._modified import conservative_propagation as conservative_propagation
from jaxplain.attribution._modified import deconvnet as deconvnet
from jaxplain.attribution._modified import deeplift as deeplift
from jaxplain.attribution._modified import guided_backprop as guided_backprop
from jaxplain.attribution._perturbation import feature_ablation as feature_ablation
from jaxplain.attribution._perturbation import occlusion as occlusion
from jaxplain.attribution._shapley import shapley_sampling as shapley_sampling
from jaxplain.attribution._site import SiteOutput as SiteOutput
from jaxplain.attribution._site import activation_x_gradient as activation_x_gradient
from jaxplain.attribution._site import layer_conductance as layer_conductance
from jaxplain.attribution._site import layer_integrated_gradients as layer_integrated_gradients
from jaxplain.attribution._site import neuron_conductance as neuron_conductance
from jaxplain.attribution._site import site_output as site_output
from jaxplain.attribution._smoothgrad import smoothgrad as smoothgrad
from jaxplain.attribution._surrogate import kernel_shap as kernel_shap
from jaxplain.attribution._surrogate import lime as lime

__all__ = [
    "SiteOutput", "activation_x_gradient", "attention_rollout", "attention_sites", "attn_lrp",
    "completeness_delta", "conservative_propagation", "deconvnet", "deeplift", "deeplift_shap",
    "feature_ablation", "grad_cam", "grad_cam_plus_plus", "gradient", "gradient_shap",
    "gradient_weighted_rollout", "gradient_x_input", "guided_backprop", "guided_grad_cam",
    "integrated_gradients", "kernel_shap", "layer_conductance", "layer_integrated_gradients",
    "lime", "lrp", "neuron_conductance", "occlusion", "score_cam", "shapley_sampling",
    "site_output", "smoothgrad",
]
