using LoopRpt.Data;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Objectives;
using LoopRpt.Training;
using TorchSharp;

namespace LoopRpt.Tests.Training;

public class LeakTests
{
    [Fact]
    public void TrainingStepsDoNotLeakNativeTensors()
    {
        using var lm = TestUtil.TinyModel(vocab: 32);
        var source = new PackedTokenSource(TrainerTests.PatternTokens(2000, 32, 1), 2, 16, 1);
        var live = new Dictionary<(string, long), long>();
        var trainer = new LoopedLmTrainer(new TrainerOptions
        {
            LogEvery = 1,
            Progress = new SyncProgress<TrainingProgress>(p => live[(p.Stage, p.Step)] = DisposeScopeManager.Statistics.ThreadTotalLiveCount),
        });
        using (torch.NewDisposeScope()) lm.Forward(TestUtil.RandomIds(1, 4, 32, 1));   // builds the model's RoPE table once
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var stages = new[]
        {
            new TrainingStage(new PretrainObjective(), 30) { GradientAccumulation = 2 },
            new TrainingStage(new GateObjective(), 10),
        };
        trainer.Train(lm, source, stages);
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        // Live tensors are flat from the first report to the last (nothing accumulates per step) ...
        Assert.Equal(live[("pretrain", 5)], live[("pretrain", 30)]);
        Assert.Equal(live[("gate", 1)], live[("gate", 10)]);
        // ... and everything the run created is released when it returns.
        Assert.Equal(before, after);
    }

    [Theory]
    [InlineData(KvCacheMode.PerLoop)]
    [InlineData(KvCacheMode.LastLoop)]
    public void GenerationDoesNotAccumulateTensorsPerTick(KvCacheMode kv)
    {
        using var lm = Inference.InferenceTestUtil.SpreadGateModel();
        long[][] prompts = [[3, 17, 42, 8, 25], [9, 1, 60], [50, 50, 4, 7, 11, 30, 2], [12], [33, 34, 35, 36]];
        long atEnd = -1;
        var generator = new LoopedGenerator(lm) { InspectCache = _ => atEnd = DisposeScopeManager.Statistics.ThreadTotalLiveCount };
        GenerationOptions Options(int tokens) => new() { MaxNewTokens = tokens, Temperature = 0, Exit = ExitMode.Q(0.6), BatchSize = 2, KvCache = kv };
        generator.GenerateBatch(prompts, Options(2));                                    // builds the model's RoPE table once
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        generator.GenerateBatch(prompts, Options(4));
        long shortRun = atEnd;
        generator.GenerateBatch(prompts, Options(20));
        // Tensors alive just before the cache is released do not grow with the number of ticks (about 5x more here) ...
        Assert.Equal(shortRun, atEnd);
        // ... and everything a call created is released when it returns.
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
