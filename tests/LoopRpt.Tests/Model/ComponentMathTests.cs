using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

public class ComponentMathTests
{
    [Fact]
    public void RmsNormMatchesHandComputation()
    {
        using var norm = new RmsNorm(3, 1e-6);
        using (no_grad()) norm.Weight.copy_(tensor(new float[] { 1f, 2f, 0.5f }));
        var y = TestUtil.ToArray(norm.forward(tensor(new float[] { 1, 2, 2 }).view(1, 3)));
        double rms = Math.Sqrt((1 + 4 + 4) / 3.0 + 1e-6);   // sqrt(3)
        Tolerance.AssertClose(1 / rms, y[0], absolute: 1e-5);
        Tolerance.AssertClose(2 * 2 / rms, y[1], absolute: 1e-5);
        Tolerance.AssertClose(0.5 * 2 / rms, y[2], absolute: 1e-5);
    }

    [Fact]
    public void RopeRotatesHalvesByPositionTimesFrequency()
    {
        using var rope = new Rope(headDim: 4, theta: 100);
        var (cos, sin) = rope.Get(0, 3, CPU, ScalarType.Float32);
        // inv_freq = [1, 100^(-1/2)] = [1, 0.1]; position 2 → angles [2, 0.2].
        var x = tensor(new float[] { 1, 2, 3, 4 }).view(1, 4);
        var y = TestUtil.ToArray(Rope.Apply(x, cos.narrow(0, 2, 1), sin.narrow(0, 2, 1)));
        double c0 = Math.Cos(2), s0 = Math.Sin(2), c1 = Math.Cos(0.2), s1 = Math.Sin(0.2);
        // rotate_half([x1, x2, x3, x4]) = [-x3, -x4, x1, x2]
        Tolerance.AssertClose(1 * c0 - 3 * s0, y[0], absolute: 1e-5);
        Tolerance.AssertClose(2 * c1 - 4 * s1, y[1], absolute: 1e-5);
        Tolerance.AssertClose(3 * c0 + 1 * s0, y[2], absolute: 1e-5);
        Tolerance.AssertClose(4 * c1 + 2 * s1, y[3], absolute: 1e-5);
        // Offsets read the same table.
        var (cos2, _) = rope.Get(2, 1, CPU, ScalarType.Float32);
        Assert.True(cos2.allclose(cos.narrow(0, 2, 1), 0, 0));
    }

    private static double Sig(double x) => 1 / (1 + Math.Exp(-x));

    [Fact]
    public void ExitDistributionMatchesHandComputation()
    {
        double[] g = { 0.5, -1.0, 2.0, 7.0 };
        var p = TestUtil.ToArray(ExitDistribution.Probabilities(tensor(g.Select(v => (float)v).ToArray()).view(1, 4)));
        double l0 = Sig(g[0]), l1 = Sig(g[1]), l2 = Sig(g[2]);
        double[] expected = { l0, l1 * (1 - l0), l2 * (1 - l0) * (1 - l1), (1 - l0) * (1 - l1) * (1 - l2) };
        for (int t = 0; t < 4; t++) Tolerance.AssertClose(expected[t], p[t], absolute: 1e-6);
        Tolerance.AssertClose(1.0, p.Sum(), absolute: 1e-5);
        var h = TestUtil.ToArray(ExitDistribution.Entropy(tensor(g.Select(v => (float)v).ToArray()).view(1, 4)))[0];
        Tolerance.AssertClose(-expected.Sum(v => v * Math.Log(v)), h, absolute: 1e-5);
    }

    [Fact]
    public void ExitDistributionSumsToOneForExtremeGates()
    {
        using var g = new Generator(4);
        var logits = randn([3, 5, 6], generator: g) * 30;
        var s = ExitDistribution.Probabilities(logits).sum(-1);
        Assert.True(s.allclose(ones_like(s), 1e-5, 1e-5));
        // bitwise: one loop: the last step takes all the mass, exp(0) = 1 exactly
        Assert.Equal(new[] { 1f }, TestUtil.ToArray(ExitDistribution.Probabilities(zeros(1, 1))));
    }

    [Fact]
    public void QExitPicksTheFirstStepWhoseCdfReachesQ()
    {
        var p = tensor(new float[] { 0.1f, 0.3f, 0.4f, 0.2f }).view(1, 4);     // CDF 0.1, 0.4, 0.8, 1.0
        long Step(double q) => ExitDistribution.QExitStep(p, q).item<long>();
        Assert.Equal(0, Step(0.0));
        Assert.Equal(0, Step(0.1));
        Assert.Equal(1, Step(0.2));
        Assert.Equal(1, Step(0.4));
        Assert.Equal(2, Step(0.5));
        Assert.Equal(3, Step(0.9));
        Assert.Equal(3, Step(1.0));
        // q = 1 means the last step even when a rounded CDF already reads 1.0 earlier.
        var saturated = tensor(new float[] { 1f, 0f, 0f, 0f }).view(1, 4);
        Assert.Equal(3, ExitDistribution.QExitStep(saturated, 1.0).item<long>());
        Assert.Equal(0, ExitDistribution.QExitStep(saturated, 0.99).item<long>());
        Assert.Throws<ArgumentOutOfRangeException>(() => ExitDistribution.QExitStep(p, 1.5));
    }

    [Fact]
    public void ExitModesSelectTheDocumentedStates()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(2, 5, 64, 1);
        var o = lm.Forward(ids);
        Assert.True(ExitMode.Fixed(1).Logits(lm, o).allclose(lm.Logits(o.Hidden[1]), 0, 0));
        Assert.True(ExitMode.Last.Logits(lm, o).allclose(lm.Logits(o.Hidden[3]), 0, 0));
        Assert.True(ExitMode.Q(1.0).Logits(lm, o).allclose(lm.Logits(o.Hidden[3]), 1e-6, 1e-6));
        Assert.True(ExitMode.Q(0.0).Logits(lm, o).allclose(lm.Logits(o.Hidden[0]), 1e-6, 1e-6));
        // Expected logits = sum_t p(t) logits[t], checked at one position by hand.
        var p = TestUtil.ToArray(o.ExitProbabilities()[1, 2]);
        var expected = zeros(64);
        for (int t = 0; t < 4; t++) expected += lm.Logits(o.Hidden[t])[1, 2] * p[t];
        Assert.True(ExitMode.Expected.Logits(lm, o)[1, 2].allclose(expected, 1e-5, 1e-5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExitMode.Fixed(4).Steps(o.ExitProbabilities()));
    }
}
