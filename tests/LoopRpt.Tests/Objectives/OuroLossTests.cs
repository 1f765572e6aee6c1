using LoopRpt.Objectives;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Objectives;

public class OuroLossTests
{
    private static double Sig(double x) => 1 / (1 + Math.Exp(-x));

    // Two tokens, T = 3; the second position is padding in the "masked" variant.
    private static readonly double[,] StepLoss = { { 2.0, 1.5, 1.4 }, { 3.0, 1.0, 0.9 } };
    private static readonly double[,] Gates = { { 0.3, -0.2, 1.0 }, { -1.0, 0.4, 0.0 } };

    private static (Tensor Loss, Tensor Gates) Inputs() => (
        tensor(new float[] { 2.0f, 1.5f, 1.4f, 3.0f, 1.0f, 0.9f }).view(1, 2, 3),
        tensor(new float[] { 0.3f, -0.2f, 1.0f, -1.0f, 0.4f, 0.0f }).view(1, 2, 3));

    private static double[] P(int i)
    {
        double l0 = Sig(Gates[i, 0]), l1 = Sig(Gates[i, 1]);
        return [l0, l1 * (1 - l0), (1 - l0) * (1 - l1)];
    }

    [Fact]
    public void StageOneLossMatchesHandComputation()
    {
        using var scope = NewDisposeScope();
        var (stepLoss, gates) = Inputs();
        double beta = 0.1, total = 0;
        for (int i = 0; i < 2; i++)
        {
            var p = P(i);
            double expected = 0, h = 0;
            for (int t = 0; t < 3; t++) { expected += p[t] * StepLoss[i, t]; h -= p[t] * Math.Log(p[t]); }
            total += expected - beta * h;
        }
        var output = PretrainObjective.Loss(stepLoss, gates, tensor(new long[] { 5, 6 }).view(1, 2), beta);
        Tolerance.AssertClose(total / 2, output.Loss.item<float>(), absolute: 1e-5);
        // Padding (target -1) is excluded from the mean: only token 0 counts.
        var masked = PretrainObjective.Loss(stepLoss, gates, tensor(new long[] { 5, -1 }).view(1, 2), beta);
        var p0 = P(0);
        double only0 = Enumerable.Range(0, 3).Sum(t => p0[t] * StepLoss[0, t] + beta * p0[t] * Math.Log(p0[t]));
        Tolerance.AssertClose(only0, masked.Loss.item<float>(), absolute: 1e-5);
        Tolerance.AssertClose(new[] { 2.5f, 1.25f, 1.15f }, TestUtil.ToArray(output.Metrics["step_loss"]));
    }

    [Fact]
    public void StageTwoLossMatchesHandComputation()
    {
        using var scope = NewDisposeScope();
        var (stepLoss, gates) = Inputs();
        double k = 50, gamma = 0.005, total = 0;
        for (int i = 0; i < 2; i++)
        {
            double sum = 0;
            for (int t = 1; t < 3; t++)
            {
                double improvement = Math.Max(0, StepLoss[i, t - 1] - StepLoss[i, t]);
                double w = Sig(k * (improvement - gamma));
                double cont = 1 - Sig(Gates[i, t]);
                sum += -(w * Math.Log(cont) + (1 - w) * Math.Log(1 - cont));
            }
            total += sum / 2;
        }
        var output = GateObjective.Loss(stepLoss, gates, tensor(new long[] { 1, 2 }).view(1, 2), k, gamma);
        Tolerance.AssertClose(total / 2, output.Loss.item<float>(), absolute: 1e-5);
    }

    [Fact]
    public void GateStageTrainsOnlyTheGate()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var objective = new GateObjective();
        Assert.Equal(new[] { "model.early_exit_gate.weight", "model.early_exit_gate.bias" }, objective.TrainableParameters(lm).Select(p => p.Name));
        var ids = TestUtil.RandomIds(2, 8, 64, 1);
        objective.Compute(lm, ids, TestUtil.RandomIds(2, 8, 64, 2), 0, 0, 0).Loss.backward();
        foreach (var (name, p) in lm.UniqueParameters())
            Assert.True(name.StartsWith("model.early_exit_gate") == (p.grad is not null), name);
    }

    [Fact]
    public void StageOneGradientsReachEveryParameter()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(2, 8, 64, 1);
        new PretrainObjective().Compute(lm, ids, TestUtil.RandomIds(2, 8, 64, 2), 0, 0, 0).Loss.backward();
        foreach (var (name, p) in lm.UniqueParameters())
            Assert.True(p.grad is not null && p.grad.abs().sum().item<float>() > 0, name);
    }

    [Fact]
    public void LateBetaAppliesAfterTheSwitch()
    {
        var objective = new PretrainObjective(new PretrainObjectiveOptions());
        // bitwise: the configured betas, returned as given
        Assert.Equal(0.1, objective.BetaAt(49, 100));
        Assert.Equal(0.05, objective.BetaAt(50, 100));
        Assert.Equal(0.1, objective.BetaAt(50, 0));                       // no stage length: no switch
        Assert.Equal(0L, objective.StageSteps);
        objective.BeginStage(100);
        Assert.Equal(100L, objective.StageSteps);
        Assert.Throws<ArgumentOutOfRangeException>(() => objective.BeginStage(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PretrainObjective(new PretrainObjectiveOptions { Beta = -1 }));
    }
}
