using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Model;

/// <summary>
/// Token embedding with the parameter named <c>weight</c> (vocab, hidden), like <c>nn.Embedding</c> and the reference
/// checkpoint, allocated without drawing anything (see <see cref="OuroLinear"/>).
/// </summary>
public sealed class OuroEmbedding : nn.Module<Tensor, Tensor>
{
    internal readonly Parameter weight;                                 // the field name is the state-dict key

    public OuroEmbedding(long numEmbeddings, long embeddingDim, Device? device = null, ScalarType dtype = ScalarType.Float32)
        : base("Embedding")
    {
        weight = new Parameter(empty([numEmbeddings, embeddingDim], dtype, device));
        HugePages.Mark(weight);                                    // before anything is written to it
        RegisterComponents();
    }

    /// <summary>The table, (vocab, hidden).</summary>
    public Parameter Weight => weight;

    /// <summary>ids (...) → (..., hidden) in the weight's dtype.</summary>
    public override Tensor forward(Tensor ids)
    {
        var shape = ids.shape.Append(weight.shape[1]).ToArray();
        return weight.index_select(0, ids.reshape(-1)).view(shape);
    }
}
