namespace LoopRpt.Inference;

/// <summary>
/// One token's exit-CDF state accumulated on the host, in float32, with the operations and rounding of the device
/// computation in <see cref="AdaptiveLoopRunner"/>: p(t) = exp(log σ(g_t) + log S_{t-1}), CDF(t) = CDF(t-1) + p(t),
/// log S_t = log S_{t-1} + log σ(-g_t). The staggered decoder reads the gate logits of its few rows once per tick and
/// decides exits here instead of dispatching a dozen one-element tensor operations.
/// </summary>
/// <remarks>
/// Each step is rounded to float32 where the device rounds it. log σ and exp are evaluated in double and rounded once,
/// so they are correctly rounded; the device's vectorized float kernels are accurate to a few units in the last place
/// (ulp), so the two CDFs can differ by a few ulps (at most 7 measured over six loops; most are identical), which
/// changes an exit only when CDF(t) lies that close to q (test <c>HostExitCdfMatchesTheDeviceComputation</c>). Scoring
/// itself already takes the device's scalar or vectorized kernel depending on how many tokens are active.
/// </remarks>
internal struct HostExitCdf
{
    /// <summary>log S_{t-1}: log-probability of not having exited before the current loop.</summary>
    public float LogSurvival;

    /// <summary>CDF(t-1): probability of having exited at or before the previous loop.</summary>
    public float Cdf;

    /// <summary>Adds loop t with gate logit <paramref name="logit"/>; true when CDF(t) ≥ <paramref name="threshold"/>.</summary>
    public bool Advance(float logit, float threshold)
    {
        float logTerm = LogSigmoid(logit) + LogSurvival;                                  // float add, as on the device
        Cdf += (float)Math.Exp(logTerm);
        LogSurvival += LogSigmoid(-logit);
        return Cdf >= threshold;
    }

    /// <summary>log σ(x) = min(x, 0) - log(1 + e^{-|x|}), evaluated in double and rounded to float.</summary>
    public static float LogSigmoid(float x)
    {
        double d = x;
        return (float)(Math.Min(d, 0.0) - Log1p(Math.Exp(-Math.Abs(d))));
    }

    /// <summary>log(1 + z) for z ≥ 0 without the cancellation of Math.Log(1 + z) at small z.</summary>
    private static double Log1p(double z)
    {
        double u = 1.0 + z;
        return u == 1.0 ? z : Math.Log(u) * z / (u - 1.0);
    }
}
