using LoopRpt.Objectives;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Objectives;

/// <summary>Each piece of the LoopRPT loss against values computed by hand (docs/method.md §4).</summary>
public class LoopRptMathTests
{
    static LoopRptMathTests() => TestUtil.ToArray(zeros(1));

    private static Tensor T1(params float[] v) => tensor(v);
    private static Tensor T2(float[,] v) => tensor(v);

    [Fact]
    public void RowQuantileInterpolatesLikeTorchAndSkipsPadding()
    {
        // Row 0: sorted 0.1 0.3 0.5 0.7 0.9, pos 0.8·4 = 3.2 → 0.7 + 0.2·0.2 = 0.74.
        // Row 1: 4 real tokens 1 2 3 4 (the 100 is padding), pos 0.8·3 = 2.4 → 3.4.
        var e = T2(new float[,] { { 0.1f, 0.5f, 0.9f, 0.3f, 0.7f }, { 4, 2, 100, 1, 3 } });
        var real = T2(new float[,] { { 1, 1, 1, 1, 1 }, { 1, 1, 0, 1, 1 } });
        var q = TestUtil.ToArray(LoopRptMath.RowQuantile(e, real, 0.8));
        Tolerance.AssertClose(0.74f, q[0], absolute: 1e-5);
        Tolerance.AssertClose(3.4f, q[1], absolute: 1e-5);
    }

    [Fact]
    public void HardTokenMaskModes()
    {
        var e = T2(new float[,] { { 0.1f, 0.5f, 0.9f, 0.3f, 0.7f }, { 4, 2, 100, 1, 3 } });
        var real = T2(new float[,] { { 1, 1, 1, 1, 1 }, { 1, 1, 0, 1, 1 } });
        // bitwise: 0/1 masks, compared elementwise
        Assert.Equal(new float[] { 0, 0, 1, 0, 0, 1, 0, 0, 0, 0 }, TestUtil.ToArray(LoopRptMath.HardTokenMask(e, real, HardTokenMode.TopFraction, 0.8, 0)));
        Assert.Equal(new float[] { 0, 1, 1, 0, 1, 1, 1, 0, 1, 1 }, TestUtil.ToArray(LoopRptMath.HardTokenMask(e, real, HardTokenMode.EntropyThreshold, 0.8, 0.5)));
        Assert.Equal(TestUtil.ToArray(real), TestUtil.ToArray(LoopRptMath.HardTokenMask(e, real, HardTokenMode.All, 0.8, 0)));
        // All-equal entropies: ≥ keeps the whole row rather than nothing; an all-padding row keeps nothing.
        var flat = T2(new float[,] { { 1, 1, 1 }, { 1, 1, 1 } });
        var pad = T2(new float[,] { { 1, 1, 1 }, { 0, 0, 0 } });
        // bitwise: 0/1 masks, compared elementwise
        Assert.Equal(new float[] { 1, 1, 1, 0, 0, 0 }, TestUtil.ToArray(LoopRptMath.HardTokenMask(flat, pad, HardTokenMode.TopFraction, 0.8, 0)));
    }

    [Fact]
    public void DifficultyAndTimePrice()
    {
        double lnV = Math.Log(16);
        var d = TestUtil.ToArray(LoopRptMath.Difficulty(T1(0, (float)(lnV / 2), (float)(2 * lnV)), 16));
        Tolerance.AssertClose(new float[] { 0, 0.5f, 1 }, d);
        // price = 0.02 (1 + 0.5 (1 - d)): 0.03, 0.025, 0.02.
        var price = TestUtil.ToArray(LoopRptMath.TimePrice(T1(d), 0.02, 0.5));
        Tolerance.AssertClose(0.03f, price[0], absolute: 1e-6);
        Tolerance.AssertClose(0.025f, price[1], absolute: 1e-6);
        Tolerance.AssertClose(0.02f, price[2], absolute: 1e-6);
    }

    [Fact]
    public void RewardTableAndStepAdvantages()
    {
        // lp = [-2, -1, -0.5, -0.4], b = -1, price = 0.025, t_ref = 1:
        // r_t = (lp_t + 1) - 0.025 (t - 1) = [-0.975, 0, 0.475, 0.55]; scale 2 doubles it.
        var lp = tensor(new float[] { -2, -1, -0.5f, -0.4f }).view(1, 1, 4);
        var r = LoopRptMath.RewardTable(lp, T2(new float[,] { { -1 } }), T2(new float[,] { { 0.025f } }), tensor(new long[,] { { 1 } }), 2.0);
        var expected = new[] { -0.975, 0, 0.475, 0.55 };
        var got = TestUtil.ToArray(r);
        for (int t = 0; t < 4; t++) Tolerance.AssertClose(2 * expected[t], got[t], absolute: 1e-5);

        double mean = expected.Average();
        double std = Math.Sqrt(expected.Sum(x => (x - mean) * (x - mean)) / 3);     // unbiased
        var a = TestUtil.ToArray(LoopRptMath.StepAdvantages(tensor(expected.Select(x => (float)x).ToArray()).view(1, 1, 4)));
        for (int t = 0; t < 4; t++) Tolerance.AssertClose((expected[t] - mean) / (std + 1e-8), a[t], absolute: 1e-5);
    }

    [Fact]
    public void GroupAdvantagesNormalizeOverRollouts()
    {
        // Token 0 over G = 3: R = 1, 2, 3 → mean 2, unbiased std 1 → -1, 0, 1. Token 1: all equal → 0.
        var R = tensor(new float[] { 1, 5, 2, 5, 3, 5 }).view(3, 1, 2);
        var a = TestUtil.ToArray(LoopRptMath.GroupAdvantages(R));
        Tolerance.AssertClose(new[] { -1f, 0f, 0f, 0f, 1f, 0f }, a);
    }

    [Fact]
    public void K3MatchesHandValuesAndClamps()
    {
        // diff = lpbar - lp: ln 2 → 2 - ln2 - 1; -ln 2 → 0.5 + ln2 - 1; 0 → 0; 20 → clamped to 10.
        var teacher = T1((float)Math.Log(2), (float)-Math.Log(2), -1, 20);
        var student = T1(0, 0, -1, 0);
        var k3 = TestUtil.ToArray(LoopRptMath.K3(teacher, student, 10));
        Tolerance.AssertClose(1 - Math.Log(2), k3[0], absolute: 1e-5);
        Tolerance.AssertClose(Math.Log(2) - 0.5, k3[1], absolute: 1e-5);
        Tolerance.AssertClose(0, k3[2], absolute: 1e-6);
        Tolerance.AssertClose(10, k3[3], absolute: 1e-6);
    }

    [Fact]
    public void ModelLossWeightsStepsThatBeatTheTeacher()
    {
        // Token 0: lp = [-1, -2], p = [0.25, 0.75], A = [1, -1] → 1·0.25·2 + 2·0.75·1 = 2.0.
        // Token 1: lp = [-3, -1], p = [0.5, 0.5], A = [-1, 2] → 3·0.5·1 + 1·0.5·3 = 3.0. Token 2 masked out.
        var lp = tensor(new float[] { -1, -2, -3, -1, -9, -9 }).view(1, 3, 2);
        var p = tensor(new float[] { 0.25f, 0.75f, 0.5f, 0.5f, 0.5f, 0.5f }).view(1, 3, 2);
        var a = tensor(new float[] { 1, -1, -1, 2, 5, 5 }).view(1, 3, 2);
        var mask = T2(new float[,] { { 1, 1, 0 } });
        Tolerance.AssertClose(2.5f, LoopRptMath.ModelLoss(lp, p, a, mask).item<float>(), absolute: 1e-5);
    }

    [Fact]
    public void PolicyLossIsMinusMeanAdvantageTimesLogPi()
    {
        // G = 2, one sequence of 2 tokens, the second masked: -((1)(-0.5) + (-1)(-2)) / 2 = -0.75.
        var adv = tensor(new float[] { 1, -1, -1, 1 }).view(2, 1, 2);
        var logPi = tensor(new float[] { -0.5f, -1, -2, -0.1f }).view(2, 1, 2);
        var mask = T2(new float[,] { { 1, 0 } });
        Tolerance.AssertClose(-0.75f, LoopRptMath.PolicyLoss(adv, logPi, mask).item<float>(), absolute: 1e-5);
    }

    [Fact]
    public void TokenEntropyOfUniformIsLogV()
    {
        Tolerance.AssertClose(Math.Log(8), LoopRptMath.TokenEntropy(zeros(2, 8)).mean().item<float>(), absolute: 1e-5);
    }
}
