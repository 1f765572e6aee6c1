using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Tests.AI;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Server;

/// <summary>
/// No use after dispose at shutdown: a fixed model (<c>looprpt serve --model</c>, <see cref="LoopRptModel"/>) disposed
/// while a request still holds a lease — the server's shutdown timeout expired, or the embedding generator still runs
/// when the chat client disposes the source it owns — stays alive until that lease ends.
/// </summary>
public class ModelDisposalTests
{
    [Fact]
    public void AFixedModelDisposedUnderALeaseLivesUntilTheLeaseEnds()
    {
        var model = LoopRptModel.FromModel(TestUtil.TinyModel(seed: 3), new LettersTokenizer().ToTextCodec());
        var lease = model.Acquire();
        var weight = lease.Model.UniqueParameters()[0].Param;
        using var ids = tensor(new long[] { 1, 2, 3, 4 }, [1, 4]);
        float before;
        using (no_grad()) using (var scope = NewDisposeScope()) before = lease.Model.Forward(ids).Hidden[^1].sum().item<float>();

        model.Dispose();                                                       // shutdown while the request runs
        Assert.False(weight.IsInvalid);
        float after;
        using (no_grad()) using (var scope = NewDisposeScope()) after = lease.Model.Forward(ids).Hidden[^1].sum().item<float>();
        Assert.Equal(before, after);                                           // bitwise: the same model computing the same forward
        Assert.Throws<ObjectDisposedException>(() => model.Acquire());        // no new request starts on it

        lease.Dispose();
        Assert.True(weight.IsInvalid);                                         // disposed with the last lease
        model.Dispose();                                                       // idempotent
        lease.Dispose();
    }

    [Fact]
    public void ALeaseCountRunsItsReleaseOnceOnTheLastRelease()
    {
        int released = 0;
        var count = new LeaseCount(() => released++);
        Assert.True(count.TryAddRef());
        count.Release();                                                       // the lease
        Assert.Equal(0, released);
        count.Release();                                                       // the owner
        Assert.Equal(1, released);
        Assert.False(count.TryAddRef());                                       // gone: no lease can be taken
        Assert.Throws<InvalidOperationException>(count.Release);
        Assert.Equal(1, released);
    }
}
