using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Model;

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) * up(x)), no biases.</summary>
public sealed class OuroMlp : nn.Module<Tensor, Tensor>
{
    internal readonly OuroLinear gate_proj, up_proj, down_proj;

    public OuroMlp(OuroConfig c, Device? device = null, ScalarType dtype = ScalarType.Float32) : base("mlp")
    {
        gate_proj = new OuroLinear(c.HiddenSize, c.IntermediateSize, hasBias: false, device, dtype);
        up_proj = new OuroLinear(c.HiddenSize, c.IntermediateSize, hasBias: false, device, dtype);
        down_proj = new OuroLinear(c.IntermediateSize, c.HiddenSize, hasBias: false, device, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => down_proj.forward(F.silu(gate_proj.forward(x)) * up_proj.forward(x));
}
