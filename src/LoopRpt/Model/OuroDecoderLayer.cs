using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// One shared decoder layer with Ouro's "sandwich" norms: a norm before and after attention, and before and after
/// the MLP (four RMSNorms). Reference names: input_layernorm (before attention), input_layernorm_2 (after it),
/// post_attention_layernorm (before the MLP), post_attention_layernorm_2 (after it).
/// </summary>
public sealed class OuroDecoderLayer : nn.Module<Tensor, Tensor>
{
    internal readonly OuroAttention self_attn;
    internal readonly OuroMlp mlp;
    internal readonly RmsNorm input_layernorm, input_layernorm_2, post_attention_layernorm, post_attention_layernorm_2;

    public OuroDecoderLayer(OuroConfig c, int index, Device? device = null, ScalarType dtype = ScalarType.Float32) : base($"layer{index}")
    {
        self_attn = new OuroAttention(c, device, dtype);
        mlp = new OuroMlp(c, device, dtype);
        input_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device: device, dtype: dtype);
        input_layernorm_2 = new RmsNorm(c.HiddenSize, c.RmsNormEps, device: device, dtype: dtype);
        post_attention_layernorm = new RmsNorm(c.HiddenSize, c.RmsNormEps, device: device, dtype: dtype);
        post_attention_layernorm_2 = new RmsNorm(c.HiddenSize, c.RmsNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new NotSupportedException("Call Forward(h, cos, sin).");

    /// <summary>h: (B, S, H) → (B, S, H).</summary>
    public Tensor Forward(Tensor h, Tensor cos, Tensor sin)
    {
        h = h.Plus(input_layernorm_2.forward(self_attn.Forward(input_layernorm.forward(h), cos, sin)));
        return Mlp(h);
    }

    /// <summary>The MLP half of the layer with its residual: h + norm(mlp(norm(h))).</summary>
    internal Tensor Mlp(Tensor h) => h.Plus(post_attention_layernorm_2.forward(mlp.forward(post_attention_layernorm.forward(h))));
}
