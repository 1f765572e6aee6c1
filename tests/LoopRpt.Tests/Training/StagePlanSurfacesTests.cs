using System.Reflection;
using LoopRpt.Cli;
using LoopRpt.Cli.Commands;
using LoopRpt.Hosting;
using LoopRpt.MLNet;
using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace LoopRpt.Tests.Training;

/// <summary>
/// Issue 16: one plan of stages. The same stage written as a CLI <c>--stages</c> string, as hosting configuration and as an
/// ML.NET <see cref="StageDescriptor"/> becomes the same <see cref="TrainingStage"/> with the same objective options, because
/// all three go through <see cref="ObjectiveKindRegistry"/>.
/// </summary>
public class StagePlanSurfacesTests
{
    public static TheoryData<string, string, Dictionary<string, string>, object> Stages() => new()
    {
        // kind, CLI stage, hosting parameters, ML.NET options (all describing the same stage of 12 steps at lr 3e-4)
        { "pretrain", "pretrain:12:3e-4:Beta=0.05:LateBetaFrom=1", new() { ["Beta"] = "0.05", ["LateBetaFrom"] = "1" },
          new PretrainObjectiveOptions { Beta = 0.05, LateBetaFrom = 1 } },
        { "gate", "gate:12:3e-4:K=20:gamma=0.01", new() { ["K"] = "20", ["Gamma"] = "0.01" }, new GateObjectiveOptions { K = 20, Gamma = 0.01 } },
        { "looprpt", "looprpt:12:3e-4:Rollouts=4:Noise=dropout:Sigma=0.2:KlCoef=0.002:HardTokens=All",
          new() { ["Rollouts"] = "4", ["Noise"] = "Dropout", ["Sigma"] = "0.2", ["KlCoef"] = "0.002", ["HardTokens"] = "all", ["Seed"] = "7" },
          new LoopRptObjectiveOptions { Rollouts = 4, Noise = NoiseKind.Dropout, Sigma = 0.2, KlCoef = 0.002, HardTokens = HardTokenMode.All, Seed = 7 } },
    };

    [Theory]
    [MemberData(nameof(Stages))]
    public void TheSameStageOnEverySurfaceIsTheSameTrainingStage(string kind, string cli, Dictionary<string, string> parameters, object options)
    {
        var fromCli = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", cli, "--seed", "7").Single();

        var config = new ConfigurationBuilder().AddInMemoryCollection(
            new Dictionary<string, string?> { ["Stages:0:Kind"] = kind, ["Stages:0:Steps"] = "12", ["Stages:0:LearningRate"] = "0.0003" }
                .Concat(parameters.Select(p => KeyValuePair.Create($"Stages:0:Parameters:{p.Key}", (string?)p.Value)))).Build();
        var fromHosting = new ObjectiveKindRegistry().CreateStage(config.Get<RetrainingOptions>()!.Stages[0]);

        var descriptor = new StageDescriptor
        {
            Kind = Enum.Parse<StageKind>(kind, ignoreCase: true), Steps = 12, LearningRate = 3e-4, ObjectiveOptions = options,
        };
        var fromMlNet = LoopedLmTrainerEstimator.ToTrainingStage(descriptor, 12, "Stages[0]", new ObjectiveKindRegistry());
        try
        {
            Assert.Equal(kind, fromCli.Objective.Name);
            AssertSameStage(fromMlNet, fromCli);
            AssertSameStage(fromMlNet, fromHosting);
            // The options given reached the objective (not the defaults: every case sets some away from them).
            AssertSameOptions(options, OptionsOf(fromMlNet.Objective));
            Assert.NotEqual(Describe(Activator.CreateInstance(options.GetType())!), Describe(OptionsOf(fromCli.Objective)));
            var expected = kind == "looprpt" ? OptimizerDefaults.LoopRpt : OptimizerDefaults.Pretraining;
            // bitwise: a setting read back as given, not computed
            Assert.Equal((expected.WeightDecay, expected.MinLearningRateRatio), (fromCli.WeightDecay, fromCli.MinLearningRateRatio));
        }
        finally
        {
            foreach (var s in new[] { fromCli, fromHosting, fromMlNet }) s.Objective.Dispose();
        }
    }

    [Fact]
    public void TheCliPretrainStageTakesItsBetaSettings()
    {
        // Before issue 16 the CLI built every pretrain objective with the default betas.
        var stage = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "pretrain:10:Beta=0.3:LateBeta=0.2:LateBetaFrom=0.5").Single();
        var pretrain = Assert.IsType<PretrainObjective>(stage.Objective);
        // bitwise: a setting read back as given, not computed
        Assert.Equal((0.3, 0.2, 10L), (pretrain.BetaAt(0, stage.Steps), pretrain.BetaAt(5, stage.Steps), stage.Steps));
        Assert.Equal(1e-3, stage.LearningRate);        // the pretraining table's
    }

    [Fact]
    public void CommandOptionsAreParametersTheStageMayOverride()
    {
        var stages = TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "looprpt:5,looprpt:5:Rollouts=3:Seed=9", "--rollouts", "6", "--sigma", "0.3", "--seed", "4");
        try
        {
            var (a, b) = (Assert.IsType<LoopRptObjective>(stages[0].Objective).Options, Assert.IsType<LoopRptObjective>(stages[1].Objective).Options);
            // bitwise: a setting read back as given, not computed
            Assert.Equal((6, 0.3, 4L), (a.Rollouts, a.Sigma, a.Seed));
            Assert.Equal((3, 0.3, 9L), (b.Rollouts, b.Sigma, b.Seed));
        }
        finally
        {
            foreach (var s in stages) s.Objective.Dispose();
        }
    }

    [Fact]
    public void BadKindsParametersAndValuesAreClearErrors()
    {
        var kinds = ObjectiveKindRegistry.BuiltIn;
        StageDefinition With(string kind, params (string Name, string Value)[] p) => new() { Kind = kind, Steps = 10, Parameters = p.ToDictionary(x => x.Name, x => x.Value) };
        string Error<T>(StageDefinition d) where T : Exception => Assert.Throws<T>(() => kinds.CreateStage(d, "Stages[3]")).Message;

        Assert.StartsWith("Stages[3]: 'finetune' is not a known stage kind; known kinds: gate, looprpt, pretrain.", Error<ArgumentException>(With("finetune")));
        Assert.StartsWith("Stages[3]: unknown parameter 'Bta'; a pretrain stage takes Beta, LateBeta, LateBetaFrom.", Error<ArgumentException>(With("pretrain", ("Bta", "0.1"))));
        Assert.StartsWith("Stages[3]: parameter 'K' must be a number; got 'fifty'.", Error<ArgumentException>(With("gate", ("K", "fifty"))));
        Assert.StartsWith("Stages[3]: parameter 'Rollouts' must be an integer; got '2.5'.", Error<ArgumentException>(With("looprpt", ("Rollouts", "2.5"))));
        Assert.StartsWith("Stages[3]: parameter 'Noise' must be one of Gaussian, Dropout; got 'pink'.", Error<ArgumentException>(With("looprpt", ("Noise", "pink"))));
        Assert.Contains("must be one of Gaussian, Dropout; got '1'", Error<ArgumentException>(With("looprpt", ("Noise", "1"))));   // no enum numbers

        var range = Assert.Throws<ArgumentOutOfRangeException>(() => kinds.CreateStage(With("pretrain", ("Beta", "-1")), "Stages[3]"));
        Assert.StartsWith("Stages[3]: Beta must be non-negative.", range.Message);
        Assert.Equal("Beta", range.ParamName);
        Assert.StartsWith("Stages[3]: Rollouts must be at least 2", Error<ArgumentOutOfRangeException>(With("looprpt", ("Rollouts", "1"))));

        var wrongType = Assert.Throws<ArgumentException>(() => kinds.CreateStage(new StageDefinition { Kind = "pretrain", ObjectiveOptions = new GateObjectiveOptions() }, "Stages[3]"));
        Assert.StartsWith("Stages[3]: ObjectiveOptions of a pretrain stage must be PretrainObjectiveOptions, but got GateObjectiveOptions.", wrongType.Message);
        Assert.Equal("ObjectiveOptions", wrongType.ParamName);
        Assert.Contains("not both", Error<ArgumentException>(new StageDefinition { Kind = "gate", ObjectiveOptions = new GateObjectiveOptions(), Parameters = new Dictionary<string, string> { ["K"] = "2" } }));
        Assert.Throws<InvalidOperationException>(() => kinds.Add(new ObjectiveKind<GateObjectiveOptions>("mine", (o, _) => new GateObjective(o))));

        // The CLI reports the same errors as usage errors naming the stage as written.
        var cli = Assert.Throws<CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "pretrain:4,gate:3:K=fifty"));
        Assert.Equal(ExitCodes.Usage, cli.ExitCode);
        Assert.Equal("--stages gate:3:K=fifty: parameter 'K' must be a number; got 'fifty'.", cli.Message);
        cli = Assert.Throws<CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "pretrain:4:LateBetaFrom=2"));
        Assert.Equal("--stages pretrain:4:LateBetaFrom=2: LateBetaFrom must lie in [0, 1].", cli.Message);
        cli = Assert.Throws<CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "gate:3:K=1:k=2"));
        Assert.Contains("parameter 'k' is given twice", cli.Message);
    }

    /// <summary>Options of a kind this test registers: its objective is a Stage I objective whose β is <see cref="Scale"/>.</summary>
    public sealed class ScaledOptions
    {
        public double Scale { get; set; } = 1;
        public bool Late { get; set; }
    }

    private static ObjectiveKind<ScaledOptions> ScaledKind() => new("scaled",
        (o, _) => new PretrainObjective(new PretrainObjectiveOptions { Beta = o.Scale, LateBeta = o.Late ? 0 : o.Scale }),
        OptimizerDefaults.LoopRpt,
        o => { if (!(o.Scale > 0)) throw new ArgumentOutOfRangeException(nameof(o.Scale), o.Scale, "Scale must be positive."); });

    [Fact]
    public void ACustomKindRegisteredOnceServesHostingAndMlNet()
    {
        var kind = ScaledKind();

        // Hosting: registered on the builder, used by configuration (parameters bound to ScaledOptions) and checked at start.
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["LoopRpt:Retraining:DataDirectory"] = "data",
            ["LoopRpt:Retraining:Stages:0:Kind"] = "SCALED", ["LoopRpt:Retraining:Stages:0:Steps"] = "8",
            ["LoopRpt:Retraining:Stages:0:Parameters:scale"] = "0.25", ["LoopRpt:Retraining:Stages:0:Parameters:Late"] = "true",
        }).Build();
        var services = new ServiceCollection();
        services.AddLoopRptRetraining(config.GetSection("LoopRpt")).AddStageKind(kind);
        using var provider = services.BuildServiceProvider();
        var kinds = provider.GetRequiredService<IOptions<ObjectiveKindRegistry>>().Value;
        Assert.Contains("scaled", kinds.Names);
        var retraining = provider.GetRequiredService<IOptions<RetrainingOptions>>().Value;   // validated: builds the objective
        var fromHosting = kinds.CreateStage(retraining.Stages[0]);

        // ML.NET: the same kind in the trainer's registry, named by the Custom stage.
        var options = new LoopedLmTrainerEstimator.Options
        {
            Stages = [new StageDescriptor { Kind = StageKind.Custom, CustomKind = "scaled", Steps = 8, ObjectiveOptions = new ScaledOptions { Scale = 0.25, Late = true } }],
        };
        options.ObjectiveKinds.Add(kind);
        options.Validate();
        var fromMlNet = LoopedLmTrainerEstimator.ToTrainingStage(options.Stages[0], 8, "Stages[0]", options.ObjectiveKinds);
        try
        {
            AssertSameStage(fromMlNet, fromHosting);
            var pretrain = Assert.IsType<PretrainObjective>(fromMlNet.Objective);
            // bitwise: a setting read back as given, not computed
            Assert.Equal((0.25, 0.0), (pretrain.BetaAt(0, fromMlNet.Steps), pretrain.BetaAt(7, fromMlNet.Steps)));
            Assert.Equal((OptimizerDefaults.LoopRpt.WeightDecay, OptimizerDefaults.LoopRpt.MinLearningRateRatio), (fromHosting.WeightDecay, fromHosting.MinLearningRateRatio));
        }
        finally
        {
            fromHosting.Objective.Dispose();
            fromMlNet.Objective.Dispose();
        }

        // Its options type and its range checks hold on both surfaces.
        options.Stages[0].ObjectiveOptions = new GateObjectiveOptions();
        Assert.Contains("Stages[0] (Custom): ObjectiveOptions of a scaled stage must be ScaledOptions, but got GateObjectiveOptions.",
            Assert.Throws<ArgumentException>(options.Validate).Message);
        var bad = new StageDefinition { Kind = "scaled", Steps = 8, Parameters = new Dictionary<string, string> { ["Scale"] = "0" } };
        Assert.StartsWith("Scale must be positive.", Assert.Throws<ArgumentOutOfRangeException>(() => kinds.CreateObjective(bad)).Message);
        // Without a registration the stage is unknown, and the CLI (built-in kinds only) does not know it.
        var unknown = new LoopedLmTrainerEstimator.Options { Stages = [new StageDescriptor { Kind = StageKind.Custom, CustomKind = "scaled", Steps = 8 }] };
        Assert.Contains("'scaled' is not a known stage kind", Assert.Throws<ArgumentException>(unknown.Validate).Message);
        Assert.Contains("unknown stage 'scaled'", Assert.Throws<CliException>(() => TrainCommand.StagesFor("--input", "x.txt", "--out", "m", "--stages", "scaled:3")).Message);
    }

    [Fact]
    public void ABinderCoversEverySettableOptionOfTheBuiltInKinds()
    {
        foreach (var name in ObjectiveKindRegistry.BuiltIn.Names)
        {
            var kind = ObjectiveKindRegistry.BuiltIn.Get(name);
            var settable = kind.OptionsType.GetProperties().Where(p => p.SetMethod is { IsPublic: true }).Select(p => p.Name);
            Assert.Equal(settable, kind.ParameterNames);
        }
        Assert.Contains("KlClamp", ObjectiveKindRegistry.BuiltIn.Get("LOOPRPT").ParameterNames);
    }

    private static void AssertSameStage(TrainingStage expected, TrainingStage actual)
    {
        Assert.Equal(expected.Objective.Name, actual.Objective.Name);
        // bitwise: a setting read back as given, not computed
        Assert.Equal(
            (expected.Steps, expected.LearningRate, expected.MinLearningRateRatio, expected.WarmupFraction, expected.WeightDecay,
             expected.Beta1, expected.Beta2, expected.GradientClip, expected.GradientAccumulation),
            (actual.Steps, actual.LearningRate, actual.MinLearningRateRatio, actual.WarmupFraction, actual.WeightDecay,
             actual.Beta1, actual.Beta2, actual.GradientClip, actual.GradientAccumulation));
        AssertSameOptions(OptionsOf(expected.Objective), OptionsOf(actual.Objective));
    }

    private static object OptionsOf(ITrainingObjective objective) => objective switch
    {
        PretrainObjective p => p.Options,
        GateObjective g => g.Options,
        LoopRptObjective r => r.Options,
        _ => throw new ArgumentException($"No options to compare for {objective.Name}."),
    };

    /// <summary>Field by field: every public property, by name.</summary>
    private static void AssertSameOptions(object expected, object actual)
    {
        Assert.Equal(expected.GetType(), actual.GetType());
        Assert.Equal(Describe(expected), Describe(actual));
    }

    private static string[] Describe(object options)
        => options.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance).Select(p => $"{p.Name}={p.GetValue(options)}").ToArray();
}
