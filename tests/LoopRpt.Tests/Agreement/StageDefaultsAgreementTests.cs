using System.CommandLine;
using LoopRpt.Cli.Commands;
using LoopRpt.Hosting;
using LoopRpt.MLNet;
using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace LoopRpt.Tests.Agreement;

/// <summary>
/// Issues 25 and 27: a stage of each kind gets the same eight optimizer settings (learning rate included) from the library,
/// the CLI, hosting and ML.NET, equal to hand-written values — for LoopRPT the published ones (lr 5e-6, cosine to 0, 3 %
/// warmup, weight decay 0.01, β 0.9 / 0.999, clip 1.0). Settings given on a face reach the stage, and every face has the same
/// training sequence-length default.
/// </summary>
/// <remarks>
/// The settings are compared exactly: they are constants copied from a table into the stage, not computed, so any
/// difference is a different default, not rounding.
/// </remarks>
public class StageDefaultsAgreementTests
{
    private const int Steps = 8;

    // Hand-written (lr, min-lr ratio, warmup, weight decay, β1, β2, clip, accumulation): not read from the code under test.
    private static readonly (double, double, double, double, double, double, double, int) PublishedLoopRpt = (5e-6, 0.0, 0.03, 0.01, 0.9, 0.999, 1.0, 1);
    private static readonly (double, double, double, double, double, double, double, int) Pretraining = (1e-3, 0.1, 0.03, 0.1, 0.9, 0.95, 1.0, 1);

    private static (double, double, double, double, double, double, double, int) Settings(TrainingStage s)
        => (s.LearningRate, s.MinLearningRateRatio, s.WarmupFraction, s.WeightDecay, s.Beta1, s.Beta2, s.GradientClip, s.GradientAccumulation);

    public static TheoryData<string> Kinds() => new() { "looprpt", "pretrain", "gate" };

    private static (double, double, double, double, double, double, double, int) Expected(string kind) => kind == "looprpt" ? PublishedLoopRpt : Pretraining;

    private static ITrainingObjective NewObjective(string kind) => kind switch
    {
        "looprpt" => new LoopRptObjective(),
        "pretrain" => new PretrainObjective(),
        _ => new GateObjective(),
    };

    private static StageKind MlNetKind(string kind) => Enum.Parse<StageKind>(kind, ignoreCase: true);

    /// <summary>The stages the four faces build for one stage of <paramref name="kind"/> given nothing but its steps.</summary>
    private static List<(string Face, TrainingStage Stage)> EveryFace(string kind)
    {
        var stages = new List<(string, TrainingStage)>
        {
            ("library: new TrainingStage", new TrainingStage(NewObjective(kind), Steps)),
            ("library: ObjectiveKindRegistry.CreateStage", ObjectiveKindRegistry.BuiltIn.CreateStage(new StageDefinition { Kind = kind, Steps = Steps })),
            ("CLI: --stages", TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", $"{kind}:{Steps}").Single()),
            ("hosting: configuration", HostingStage(new Dictionary<string, string?> { ["Kind"] = kind, ["Steps"] = $"{Steps}" })),
            ("ML.NET: initializer", MlNetStage(new StageDescriptor { Kind = MlNetKind(kind), Steps = Steps })),
        };
        var factory = kind switch { "looprpt" => StageDescriptor.LoopRpt(Steps), "pretrain" => StageDescriptor.Pretrain(Steps), _ => StageDescriptor.Gate(Steps) };
        stages.Add(("ML.NET: factory", MlNetStage(factory)));
        return stages;
    }

    /// <summary>A retraining stage bound from configuration the way <c>AddLoopRptRetraining</c> binds it, resolved by the host's kinds.</summary>
    private static TrainingStage HostingStage(Dictionary<string, string?> stage)
    {
        var settings = new Dictionary<string, string?> { ["LoopRpt:Retraining:DataDirectory"] = "data" };
        foreach (var (key, value) in stage) settings[$"LoopRpt:Retraining:Stages:0:{key}"] = value;
        var config = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddLoopRptRetraining(config.GetSection("LoopRpt"));
        using var provider = services.BuildServiceProvider();
        var retraining = provider.GetRequiredService<IOptions<RetrainingOptions>>().Value;       // validated on creation
        return provider.GetRequiredService<IOptions<ObjectiveKindRegistry>>().Value.CreateStage(retraining.Stages[0]);
    }

    /// <summary>A stage as the ML.NET trainer builds it at fit time, after the options' own validation.</summary>
    private static TrainingStage MlNetStage(StageDescriptor descriptor)
    {
        var options = new LoopedLmTrainerEstimator.Options { Stages = [descriptor] };
        options.Validate();
        return LoopedLmTrainerEstimator.ToTrainingStage(options.Stages[0], descriptor.Steps, "Stages[0]", options.ObjectiveKinds);
    }

    private static void Dispose(IEnumerable<(string Face, TrainingStage Stage)> stages)
    {
        foreach (var (_, s) in stages) s.Objective.Dispose();
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void EveryFaceGivesTheKindsDefaults(string kind)
    {
        var stages = EveryFace(kind);
        try
        {
            Assert.Equal(6, stages.Count);
            foreach (var (face, stage) in stages)
            {
                Assert.True(Expected(kind) == Settings(stage), $"{face}: {Settings(stage)}, expected {Expected(kind)}");
                Assert.Equal(kind, stage.Objective.Name);
                Assert.Equal(Steps, stage.Steps);
            }
        }
        finally
        {
            Dispose(stages);
        }
    }

    [Fact]
    public void TheMlNetDescriptorReadsTheDefaultsOfItsKind()
    {
        // What a user reads from the options is what the stage trains with, whenever the kind is set.
        // bitwise: settings read back as given, not computed
        var d = new StageDescriptor { Steps = Steps };
        d.Kind = StageKind.LoopRpt;
        Assert.Equal(PublishedLoopRpt, (d.LearningRate, d.MinLearningRateRatio, d.WarmupFraction, d.WeightDecay, d.Beta1, d.Beta2, d.GradientClip, d.GradientAccumulation));
        d.Kind = StageKind.Gate;
        Assert.Equal(Pretraining.Item1, d.LearningRate);
    }

    // Settings away from both tables, so a face that drops one is caught.
    private static readonly (double, double, double, double, double, double, double, int) Given = (2e-4, 0.2, 0.1, 0.05, 0.8, 0.99, 0.5, 2);

    [Fact]
    public void SettingsGivenOnEachFaceReachTheStage()
    {
        var (lr, minLr, warmup, wd, b1, b2, clip, accum) = Given;
        string T(double v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        var stages = new List<(string, TrainingStage)>
        {
            ("library: initializer", new TrainingStage(new LoopRptObjective(), Steps)
                { LearningRate = lr, MinLearningRateRatio = minLr, WarmupFraction = warmup, WeightDecay = wd, Beta1 = b1, Beta2 = b2, GradientClip = clip, GradientAccumulation = accum }),
            ("library: definition", ObjectiveKindRegistry.BuiltIn.CreateStage(new StageDefinition
                { Kind = "looprpt", Steps = Steps, LearningRate = lr, MinLearningRateRatio = minLr, WarmupFraction = warmup, WeightDecay = wd, Beta1 = b1, Beta2 = b2, GradientClip = clip, GradientAccumulation = accum })),
            ("CLI: command options", TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", $"looprpt:{Steps}", "--lr", T(lr), "--min-lr-ratio", T(minLr),
                "--warmup", T(warmup), "--weight-decay", T(wd), "--beta1", T(b1), "--beta2", T(b2), "--clip", T(clip), "--grad-accum", $"{accum}").Single()),
            ("CLI: NAME=VALUE", TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages",
                $"looprpt:{Steps}:{T(lr)}:MinLearningRateRatio={T(minLr)}:warmupfraction={T(warmup)}:WeightDecay={T(wd)}:Beta1={T(b1)}:Beta2={T(b2)}:GradientClip={T(clip)}:GradientAccumulation={accum}").Single()),
            ("hosting: configuration", HostingStage(new Dictionary<string, string?>
            {
                ["Kind"] = "looprpt", ["Steps"] = $"{Steps}", ["LearningRate"] = T(lr), ["MinLearningRateRatio"] = T(minLr), ["WarmupFraction"] = T(warmup),
                ["WeightDecay"] = T(wd), ["Beta1"] = T(b1), ["Beta2"] = T(b2), ["GradientClip"] = T(clip), ["GradientAccumulation"] = $"{accum}",
            })),
            ("ML.NET: descriptor", MlNetStage(new StageDescriptor
            {
                Kind = StageKind.LoopRpt, Steps = Steps, LearningRate = lr, MinLearningRateRatio = minLr, WarmupFraction = warmup, WeightDecay = wd,
                Beta1 = b1, Beta2 = b2, GradientClip = clip, GradientAccumulation = accum,
            })),
        };
        try
        {
            foreach (var (face, stage) in stages) Assert.True(Given == Settings(stage), $"{face}: {Settings(stage)}, expected {Given}");
        }
        finally
        {
            Dispose(stages);
        }
    }

    [Fact]
    public void AStagesOwnSettingBeatsTheCommandOptionAndAnUnsetOneKeepsTheKindsDefault()
    {
        var stages = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "looprpt:4:Beta2=0.9,pretrain:4", "--beta2", "0.98");
        try
        {
            // bitwise: settings read back as given, not computed
            Assert.Equal((0.9, 0.98), (stages[0].Beta2, stages[1].Beta2));
            Assert.Equal((PublishedLoopRpt.Item1, Pretraining.Item1), (stages[0].LearningRate, stages[1].LearningRate));
        }
        finally
        {
            foreach (var s in stages) s.Objective.Dispose();
        }
    }

    [Fact]
    public void OutOfRangeSettingsFailTheSameWayOnEveryFace()
    {
        const string Message = "Beta2 must lie in [0, 1).";
        Assert.Contains(Message, Check(() => ObjectiveKindRegistry.BuiltIn.CreateStage(new StageDefinition { Kind = "looprpt", Steps = 1, Beta2 = 1 })));
        using (var rpt = new LoopRptObjective()) Assert.Contains(Message, Check(() => new TrainingStage(rpt, 1) { Beta2 = 1 }.ToDefinition().Validate()));
        Assert.Contains(Message, Assert.Throws<LoopRpt.Cli.CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "looprpt:4:Beta2=1")).Message);
        Assert.Contains("--beta2", Assert.Throws<LoopRpt.Cli.CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "looprpt:4", "--beta2", "1")).Message);
        var hosting = Assert.Throws<OptionsValidationException>(() => HostingStage(new Dictionary<string, string?> { ["Kind"] = "looprpt", ["Steps"] = "4", ["Beta2"] = "1" }));
        Assert.Contains("RetrainingOptions.Stages[0] ('looprpt'): " + Message, hosting.Message);
        var mlnet = new LoopedLmTrainerEstimator.Options { Stages = [new StageDescriptor { Kind = StageKind.LoopRpt, Steps = 4, Beta2 = 1 }] };
        Assert.Contains("Stages[0] (LoopRpt): " + Message, Assert.Throws<ArgumentOutOfRangeException>(mlnet.Validate).Message);
    }

    private static string Check(Action build) => Assert.Throws<ArgumentOutOfRangeException>(build).Message;

    [Fact]
    public void EveryFaceHasTheSameSequenceLengthDefault()
    {
        const int Expected = 64;
        Assert.Equal(Expected, TrainerOptions.Defaults.SequenceLength);
        foreach (var (command, args) in new[] { (TrainCommand.Create(), "--input x.txt --out m"), (ExperimentCommand.Create(), "--input x.txt --heldout y.txt --out e") })
            Assert.Equal(Expected, command.Parse(args).GetValue<int>("--seq-len"));
        Assert.Equal(Expected, new RetrainingOptions().SequenceLength);
        var bound = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["DataDirectory"] = "data" }).Build().Get<RetrainingOptions>()!;
        Assert.Equal(Expected, bound.SequenceLength);
        Assert.Equal(Expected, new LoopedLmTrainerEstimator.Options().SequenceLength);
        Assert.Equal(Expected, LoopedLmTrainerEstimator.Options.Defaults.SequenceLength);   // the catalog's optional parameter
    }
}
