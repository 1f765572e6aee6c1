using LoopRpt.Data;
using static TorchSharp.torch;

namespace LoopRpt.Objectives;

/// <summary>
/// Masked means of the Ouro objectives (pretraining, gate). <see cref="MeanOverTokens"/> averages over the (B, S) token axes
/// only and keeps any trailing axis (a per-step loss stays a vector); <see cref="LoopRptMath.MaskedMeanOverAll"/> instead
/// reduces every axis to one number.
/// </summary>
internal static class Masked
{
    /// <summary>mask (B, S) float32 where targets are real tokens.</summary>
    public static Tensor TargetMask(Tensor targets) => targets.ne(Held.IgnoreIndex).to_type(ScalarType.Float32);

    /// <summary>sum(x * mask) / max(sum(mask), 1) over the leading (B, S) axes; x may have trailing axes, which the result keeps.</summary>
    public static Tensor MeanOverTokens(Tensor x, Tensor mask)
    {
        var m = mask;
        while (m.dim() < x.dim()) m = m.unsqueeze(-1);
        var num = (x * m).sum([0L, 1L]);
        return num / mask.sum().clamp_min(Held.One);
    }
}
