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

    /// <summary>
    /// The TopFraction cut keeps, per row of n real targets with distinct entropies, the k = ⌈(n − 1)(1 − q)⌉ of highest
    /// entropy: the count of the authors' strict <c>entropy &gt; quantile_q</c> (linear interpolation). For q = 0.8 that is
    /// 3 of 16 (the ≥ rule kept 4, 25 %), 2 of 10, 51 of 256, 1 of 2, none of 1. Padding does not count.
    /// </summary>
    [Theory]
    [InlineData(16, 3)]
    [InlineData(10, 2)]
    [InlineData(12, 3)]
    [InlineData(11, 2)]
    [InlineData(7, 2)]
    [InlineData(5, 1)]
    [InlineData(2, 1)]
    [InlineData(1, 0)]
    [InlineData(21, 4)]
    [InlineData(256, 51)]
    public void TopFractionKeepsTheDocumentedCountOfDistinctEntropies(int n, int k)
    {
        Assert.Equal(k, n - 1 - (n - 1) * 4 / 5);                      // ⌈(n − 1) · 0.2⌉ in integers: the rule the docs state
        const int Pad = 3;
        var rng = new Random(n);
        var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();     // distinct entropies, shuffled
        var e = new float[n + Pad];
        var real = new float[n + Pad];
        for (int i = 0; i < n; i++) { e[i] = 0.5f + 0.01f * order[i]; real[i] = 1; }
        for (int i = n; i < n + Pad; i++) e[i] = 100;                    // padding with a huge entropy must never be kept
        var mask = TestUtil.ToArray(LoopRptMath.HardTokenMask(tensor(e).view(1, -1), tensor(real).view(1, -1), HardTokenMode.TopFraction, 0.8, 0));
        var kept = Enumerable.Range(0, n + Pad).Where(i => mask[i] == 1).ToArray();
        var expected = Enumerable.Range(0, n).OrderByDescending(i => order[i]).Take(k).Order().ToArray();
        Assert.Equal(expected, kept);
    }

    /// <summary>
    /// Ties: a token whose entropy equals the k-th highest exactly is kept too, so ties can only add tokens (the authors'
    /// strict &gt; would drop the whole tied group); ties above the k-th or below the cut change nothing.
    /// </summary>
    [Fact]
    public void TopFractionKeepsExactTiesAtTheCutAndOnlyThoseAddTokens()
    {
        // 16 targets, k = 3. Row 0: the 3rd and 4th highest tie (7) → 4 kept. Row 1: the top two tie (9), the rest below the
        // 3rd are tied among themselves → exactly 3. Row 2: all equal → all 16 kept.
        var rows = new float[3, 16];
        float[] r0 = [1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 0.5f, 0.25f, 0.1f, 0.2f, 0.3f, 0.4f];
        float[] r1 = [9, 9, 8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        for (int i = 0; i < 16; i++) { rows[0, i] = r0[i]; rows[1, i] = r1[i]; rows[2, i] = 4; }
        var real = ones(3, 16);
        var mask = TestUtil.ToArray(LoopRptMath.HardTokenMask(tensor(rows), real, HardTokenMode.TopFraction, 0.8, 0));
        int[] Kept(int row) => Enumerable.Range(0, 16).Where(i => mask[row * 16 + i] == 1).ToArray();
        Assert.Equal(new[] { 6, 7, 8, 9 }, Kept(0));
        Assert.Equal(new[] { 0, 1, 2 }, Kept(1));
        Assert.Equal(Enumerable.Range(0, 16).ToArray(), Kept(2));
    }

    /// <summary>
    /// docs/method.md §4: the teacher's baseline b and reference step t_ref are constant per token across loop steps and
    /// rollouts, so they cancel in both normalized advantages: shifting b by any per-token constant and moving t_ref
    /// anywhere leaves the model loss and the policy loss unchanged (mask and time price fixed). The time price does not
    /// cancel (it multiplies t), nor does the mask: a changed price changes the loss.
    /// </summary>
    [Fact]
    public void TeacherBaselineAndReferenceStepCancelInBothAdvantages()
    {
        const int G = 4, B = 2, S = 6, T = 4;
        using var g = new Generator(11);
        var lpClean = -rand([B, S, T], generator: g) * 3;
        var lpRollouts = -rand([G, B, S, T], generator: g) * 3;
        var pClean = randn([B, S, T], generator: g).softmax(-1);
        var logPi = -rand([G, B, S], generator: g);
        var sampled = randint(0, T, [G, B, S], generator: g).unsqueeze(-1);
        var mask = (rand([B, S], generator: g) > 0.3).to_type(ScalarType.Float32);
        var price = rand([B, S], generator: g) * 0.05;
        double Loss(Tensor baseline, Tensor refStep, Tensor p)
        {
            var stepAdv = LoopRptMath.StepAdvantages(LoopRptMath.RewardTable(lpClean, baseline, p, refStep, 1.0));
            var reward = LoopRptMath.RewardTable(lpRollouts, baseline, p, refStep, 1.0).gather(-1, sampled).squeeze(-1);
            return (LoopRptMath.ModelLoss(lpClean, pClean, stepAdv, mask) + LoopRptMath.PolicyLoss(LoopRptMath.GroupAdvantages(reward), logPi, mask)).item<float>();
        }
        var b = -rand([B, S], generator: g) * 2;
        var tRef = randint(0, T, [B, S], generator: g);
        double reference = Loss(b, tRef, price);
        double shifted = Loss(b + randn([B, S], generator: g) * 5, randint(0, T, [B, S], generator: g), price);
        Tolerance.AssertClose(reference, shifted, "b shifted per token, t_ref moved", relative: 1e-4, absolute: 1e-5);
        double repriced = Loss(b, tRef, price * 4 + 0.1);
        Assert.True(Math.Abs(repriced - reference) > 1e-3, $"the time price must reach the loss: {reference} vs {repriced}");
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
    public void ModelLossUpWeightsStepsWithAPositiveStepAdvantage()
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
