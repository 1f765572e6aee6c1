using LoopRpt.Model;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Model;

public class ModelSmokeTests
{
    [Fact]
    public void ForwardProducesPerStepShapes()
    {
        using var scope = NewDisposeScope();
        using var lm = TestUtil.TinyModel();
        var ids = TestUtil.RandomIds(2, 7, 64, 3);
        var o = lm.Forward(ids);
        Assert.Equal(4, o.Steps);
        Assert.Equal(new long[] { 2, 7, 32 }, o.Hidden[0].shape);
        Assert.Equal(new long[] { 2, 7, 4 }, o.GateLogits.shape);
        var p = o.ExitProbabilities().sum(-1);
        Assert.True(allclose(p, ones_like(p), 1e-5, 1e-6));
        Assert.Equal(new long[] { 2, 7, 64 }, lm.Logits(o.Hidden[2]).shape);
    }
}
