using LoopRpt.Data;
using TorchSharp;

namespace LoopRpt.Objectives;

/// <summary>
/// Constant Scalars of the per-step paths (objectives, trainer, optimizer), held for the process: a number converted to a
/// Scalar for one call can be finalized while the native call still reads it (docs/platform.md §2). Pass
/// <see cref="One"/> as the explicit alpha of <c>add</c> and <c>add_</c>, whose one-argument forms create a hidden one.
/// Values that depend on options are held by their owner (or by a <c>using</c> local for one call) instead.
/// </summary>
internal static class Held
{
    /// <summary>0: the core's one held zero (<see cref="Model.HeldScalars.Zero"/>).</summary>
    public static readonly Scalar Zero = Model.HeldScalars.Zero;

    /// <summary>
    /// 1, the core's one held one (<see cref="Model.HeldScalars.One"/>): the alpha of <c>add(x, One)</c>, and the 1 of
    /// <c>1 + x</c>, <c>1 - x</c>, <c>clamp_min(1)</c>.
    /// </summary>
    public static readonly Scalar One = Model.HeldScalars.One;

    /// <summary><see cref="LoopRptMath.AdvantageEpsilon"/>.</summary>
    public static readonly Scalar AdvantageEpsilon = LoopRptMath.AdvantageEpsilon;

    /// <summary><see cref="TokenBatch.IgnoreIndex"/> (long), the target of a padded position.</summary>
    public static readonly Scalar IgnoreIndex = TokenBatch.IgnoreIndex;
}
