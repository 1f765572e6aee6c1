using LoopRpt.Inference;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace LoopRpt.Tests.Inference;

/// <summary>
/// The staggered decoder decides exits on the host (<see cref="HostExitCdf"/>); scoring decides them with tensor
/// operations. Both must give the same CDF, survival and decisions.
/// </summary>
public class HostExitCdfTests
{
    /// <summary>
    /// The device's float kernels for log σ and exp are accurate to a few units in the last place (ulp), the host's are
    /// correctly rounded, and CDF and log S accumulate over the loops: measured at most 7 ulps apart on the vectorized
    /// path (1 on the scalar tail) for six loops.
    /// </summary>
    private const int Band = 16;

    /// <summary>Distance in units in the last place between two finite floats of the same sign.</summary>
    private static int Ulps(float a, float b) => Math.Abs(BitConverter.SingleToInt32Bits(a) - BitConverter.SingleToInt32Bits(b));

    [Theory]
    [InlineData(4096)]   // the device's vectorized kernels
    [InlineData(5)]      // its scalar tail
    public void HostExitCdfMatchesTheDeviceComputation(int tokens)
    {
        using var scope = NewDisposeScope();
        const int loops = 6;
        var random = new Random(11);
        var logits = new float[tokens, loops];
        for (int i = 0; i < tokens; i++)
            for (int t = 0; t < loops; t++)
                logits[i, t] = i % 97 == 0 ? (float)(random.NextDouble() * 60 - 30) : (float)(random.NextDouble() * 8 - 5);
        double[] thresholds = [0.3, 0.5, 0.7, 0.9];

        // Device: the operations of AdaptiveLoopRunner, loop by loop, on all tokens at once.
        var host = new HostExitCdf[tokens];
        Tensor? logSurvival = null, cdf = null;
        int compared = 0, decisions = 0, exact = 0;
        for (int t = 0; t < loops; t++)
        {
            var column = new float[tokens];
            for (int i = 0; i < tokens; i++) column[i] = logits[i, t];
            var g = tensor(column);
            logSurvival ??= zeros_like(g);
            var p = (F.logsigmoid(g) + logSurvival).exp();
            cdf = cdf is null ? p : cdf + p;
            logSurvival = logSurvival + F.logsigmoid(-g);
            var deviceCdf = cdf.data<float>().ToArray();
            var deviceLogS = logSurvival.data<float>().ToArray();

            for (int i = 0; i < tokens; i++)
            {
                var before = host[i];
                host[i].Advance(column[i], 2f);                                          // threshold 2: never exits, state only
                Assert.True(Ulps(host[i].Cdf, deviceCdf[i]) <= Band, $"CDF of token {i} at loop {t}: host {host[i].Cdf:R}, device {deviceCdf[i]:R}");
                Assert.True(Ulps(host[i].LogSurvival, deviceLogS[i]) <= Band || Math.Abs(host[i].LogSurvival - deviceLogS[i]) < 1e-30,
                    $"log S of token {i} at loop {t}: host {host[i].LogSurvival:R}, device {deviceLogS[i]:R}");
                compared++;
                exact += host[i].Cdf == deviceCdf[i] ? 1 : 0;
                foreach (var q in thresholds)
                {
                    var state = before;
                    bool hostExit = state.Advance(column[i], (float)q);
                    bool deviceExit = deviceCdf[i] >= (float)q;
                    // A decision can differ only where the two CDFs straddle q within their difference.
                    if (Ulps(deviceCdf[i], (float)q) > Band) Assert.Equal(deviceExit, hostExit);
                    decisions += hostExit ? 1 : 0;
                }
            }
        }
        Assert.Equal(tokens * loops, compared);
        Assert.True(exact > compared / 2, $"only {exact} of {compared} CDFs are bit-identical");
        Assert.InRange(decisions, 1, compared * thresholds.Length - 1);                  // both outcomes occur
    }

    [Theory]
    [InlineData(0.7)]
    [InlineData(0.3)]
    [InlineData(0.55)]
    public void ThresholdIsComparedInFloatLikeTheDevice(double q)
    {
        using var scope = NewDisposeScope();
        // Floats on both sides of q in float32 and in double: the device casts q to the tensor's type.
        float f = (float)q;
        float[] values = [BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(f) - 1), f, BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(f) + 1)];
        var device = (tensor(values) >= q).data<bool>().ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            // A state whose CDF is exactly values[i] after a step that adds nothing (gate logit -inf-like: p underflows to 0).
            var state = new HostExitCdf { Cdf = values[i], LogSurvival = -200f };
            Assert.Equal(device[i], state.Advance(0f, f));
        }
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(1e-6f)]
    [InlineData(3.5f)]
    [InlineData(-3.5f)]
    [InlineData(40f)]
    [InlineData(-40f)]
    [InlineData(-120f)]
    public void LogSigmoidIsCorrectlyRounded(float x)
    {
        // Independent value: log σ(x) = -log(1 + e^{-x}) in decimal arithmetic with enough digits.
        decimal Exp(decimal v)
        {
            decimal term = 1, sum = 1;
            for (int k = 1; k < 200; k++) { term *= v / k; sum += term; if (term == 0) break; }
            return sum;
        }
        double expected = x switch
        {
            >= 0 => -(double)LogOnePlus(x > 60 ? 0m : (decimal)Math.Exp(-x)),            // e^{-x} ≤ 1
            _ => x - (double)LogOnePlus(x < -60 ? 0m : Exp((decimal)x)),                   // log σ(x) = x - log(1 + e^{x})
        };
        // bitwise: correct rounding is the property under test: the reference is exact (decimal) and rounded once
        Assert.Equal((float)expected, HostExitCdf.LogSigmoid(x));
        Tolerance.AssertClose(HostExitCdf.LogSigmoid(x) - HostExitCdf.LogSigmoid(-x), x, absolute: 1e-5);       // log σ(x) - log σ(-x) = x
    }

    /// <summary>log(1 + z) for 0 ≤ z ≤ 1 by the series of atanh: log(1+z) = 2 atanh(z / (2 + z)).</summary>
    private static decimal LogOnePlus(decimal z)
    {
        decimal y = z / (2 + z), y2 = y * y, term = y, sum = 0;
        for (int k = 1; k < 400; k += 2) { sum += term / k; term *= y2; if (term == 0) break; }
        return 2 * sum;
    }
}
