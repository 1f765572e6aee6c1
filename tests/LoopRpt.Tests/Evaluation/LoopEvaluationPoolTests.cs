using LoopRpt.Evaluation;

namespace LoopRpt.Tests.Evaluation;

public sealed class LoopEvaluationPoolTests
{
    private static LoopEvaluation Eval(string name, long tokens, double s1, double s2, double qAcc, double qExit)
        => new(name, 2, [0.5], false,
            [new BucketEvaluation("All", 0, tokens, [s1, s2], [new QExitPoint(0.5, qAcc, qExit)]),
             new BucketEvaluation("Hard", 1.5, 0, [double.NaN, double.NaN], [new QExitPoint(0.5, double.NaN, double.NaN)])]);

    [Fact]
    public void PoolingWeightsEachPartByItsTokensAndSkipsEmptyBuckets()
    {
        var pooled = LoopEvaluation.Pool([Eval("a", 100, 0.5, 0.9, 0.8, 1.5), Eval("b", 300, 0.1, 0.5, 0.4, 2.0)], "both");
        var all = pooled["All"];
        Assert.Equal(400, all.Tokens);
        Tolerance.AssertClose((100 * 0.5 + 300 * 0.1) / 400, all.StepAccuracy[0], absolute: 1e-12);      // 0.2
        Tolerance.AssertClose((100 * 0.9 + 300 * 0.5) / 400, all.StepAccuracy[1], absolute: 1e-12);      // 0.6
        Tolerance.AssertClose((100 * 0.8 + 300 * 0.4) / 400, all.QExit[0].Accuracy, absolute: 1e-12);    // 0.5
        Tolerance.AssertClose((100 * 1.5 + 300 * 2.0) / 400, all.QExit[0].MeanExitStep, absolute: 1e-12); // 1.875
        Assert.Equal(0, pooled["Hard"].Tokens);
        Assert.True(double.IsNaN(pooled["Hard"].StepAccuracy[0]));
        Assert.Equal("both", pooled.Name);
    }

    [Fact]
    public void PartsOfDifferentShapesAreRefused()
    {
        var three = new LoopEvaluation("c", 3, [0.5], false,
            [new BucketEvaluation("All", 0, 1, [1.0, 1.0, 1.0], [new QExitPoint(0.5, 1, 1)]),
             new BucketEvaluation("Hard", 1.5, 0, [0.0, 0.0, 0.0], [new QExitPoint(0.5, 0, 0)])]);
        Assert.Throws<ArgumentException>(() => LoopEvaluation.Pool([Eval("a", 1, 1, 1, 1, 1), three], "x"));
        Assert.Throws<ArgumentException>(() => LoopEvaluation.Pool([], "x"));
    }
}
