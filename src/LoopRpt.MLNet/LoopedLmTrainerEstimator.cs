using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.MLNet.Persistence;
using LoopRpt.Model;
using LoopRpt.Native;
using LoopRpt.Objectives;
using LoopRpt.Training;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace LoopRpt.MLNet;

/// <summary>
/// Trains a looped language model (Ouro) on a token column through any sequence of stages — pretraining, gate training,
/// LoopRPT — and returns the <see cref="AdaptiveExitScoringTransformer"/> for the trained model.
/// </summary>
/// <remarks>
/// | Input column | Type |
/// |---|---|
/// | <see cref="LoopedLmTrainerEstimator.Options.TokenColumnName"/> | Vector&lt;Int32&gt; or Vector&lt;Int64&gt; |
///
/// Output columns: those of <see cref="AdaptiveExitScoringTransformer"/>.
///
/// | Characteristic | |
/// |---|---|
/// | Streams the data | yes: a cursor is packed into S+1-token windows batch by batch (<see cref="DataViewTokenBatchSource"/>) |
/// | GPU | optional (<c>MLContext.GpuDeviceId</c> / <c>FallbackToCpu</c>, or <see cref="LoopedLmTrainerEstimator.Options.Device"/>) |
/// | Native package | libtorch (libtorch-cpu-linux-x64 or a CUDA build) |
/// | Deterministic | yes on CPU for a seed; resume equals an uninterrupted run |
/// | Progress | MLContext.Log (key=value lines), IProgress, CancellationToken |
/// | ONNX export | no |
/// </remarks>
public sealed partial class LoopedLmTrainerEstimator : LoopRptEstimator<LoopedLmTrainerEstimator.Options, AdaptiveExitScoringTransformer>
{
    internal LoopedLmTrainerEstimator(MLContext ml, LoopedLmTrainerEstimator.Options options)
        : base(ml, options, static o => { o.Validate(); return o.Clone(); })
    {
    }

    /// <summary>
    /// The trainer stage of <paramref name="d"/> (<paramref name="steps"/> steps), bound into a <see cref="StageDefinition"/> and
    /// resolved by <paramref name="kinds"/> (<see cref="ObjectiveKindRegistry.CreateStage(StageDefinition, string?)"/>: wrong options
    /// types and bad values throw, naming <paramref name="where"/>). Settings left unset take the kind's defaults.
    /// </summary>
    internal static TrainingStage ToTrainingStage(StageDescriptor d, long steps, string where, ObjectiveKindRegistry kinds)
        => kinds.CreateStage(d.ToDefinition(steps), where);

    private protected override AdaptiveExitScoringTransformer FitCore(IDataView input)
    {
        var o = _options;
        var column = SchemaChecks.Tokens(input.Schema, o.TokenColumnName);
        var fitted = TokenizerAnnotations.Read(column);                  // the tokenizer earlier in the pipeline, if any
        var host = ((IHostEnvironment)_ml).Register("LoopRpt.Trainer");
        using var ch = host.Start("Fit");
        TorchNative.EnsureLoaded();
        var (device, deviceName, fallback) = MLContextDevice.Resolve(_ml, o.Device, o.FallbackToCpu);
        long seed = o.Seed ?? host.Rand.Next();
        var dtype = o.DType == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;

        OuroForCausalLM lm;
        ModelMeta baseMeta;
        if (o.InitialModelDirectory is { } init)
        {
            var loaded = ModelDirectory.Load(init, device, dtype);
            lm = loaded.Model;
            baseMeta = loaded.Meta;
        }
        else
        {
            var config = o.Config?.Clone() ?? OuroConfig.FromPreset(o.Preset);
            config.VocabSize = o.VocabularySize ?? fitted?.VocabularySize ?? InferVocabulary(input, column);
            if (o.Loops is { } loops) config.TotalUtSteps = loops;
            config.Validate();
            using var gen = new Generator((ulong)seed);
            lm = new OuroForCausalLM(config, device, dtype, gen);
            baseMeta = new ModelMeta();
        }
        if (o.TokenizerDescription is not null) baseMeta.Tokenizer = (System.Text.Json.Nodes.JsonObject)o.TokenizerDescription.DeepClone();
        else if (fitted is { } f) baseMeta.Tokenizer = f.Description;

        var stages = new List<TrainingStage>();
        try
        {
            if (o.SequenceLength > lm.Config.MaxPositionEmbeddings)
                throw new ArgumentOutOfRangeException(nameof(LoopedLmTrainerEstimator.Options.SequenceLength), o.SequenceLength,
                    $"SequenceLength must not exceed the model's max_position_embeddings ({lm.Config.MaxPositionEmbeddings}).");
            var scorerOptions = o.Scorer.Clone();
            scorerOptions.TokenColumnName = o.TokenColumnName;
            scorerOptions.ModelDirectory = o.ModelDirectory;          // the scorer may only reference a directory holding these weights
            scorerOptions.Validate(lm.Config);

            // Stream position of micro-batch 0 of global step g (stages may accumulate differently).
            var plan = o.Stages.ToList();
            long[] steps = new long[plan.Count];
            using var source = new DataViewTokenBatchSource(input, o.TokenColumnName, o.BatchSize, o.SequenceLength, o.SeparatorTokenId, seed,
                                                            g => FirstBatchOfStep(g - baseMeta.Step, steps, plan)) { VocabularyLimit = lm.Config.VocabSize };
            long? windows = null;
            for (int i = 0; i < plan.Count; i++)
            {
                steps[i] = plan[i].Steps;
                if (plan[i].Epochs is { } epochs)
                {
                    windows ??= source.CountWindows();
                    steps[i] = Math.Max(1, (long)Math.Ceiling(epochs * windows.Value / ((double)o.BatchSize * plan[i].GradientAccumulation)));
                }
            }
            for (int i = 0; i < plan.Count; i++)
                stages.Add(ToTrainingStage(plan[i], steps[i], $"Stages[{i}] ({plan[i].Kind})", o.ObjectiveKinds));

            ch.Info(MessageSensitivity.None, $"LoopRpt train: device={device} dtype={o.DType} seed={seed} params={lm.Config.ParameterCount()} vocab={lm.Config.VocabSize} loops={lm.Config.TotalUtSteps} " +
                                             $"plan=[{string.Join(",", stages.Select(s => $"{s.Objective.Name}:{s.Steps}"))}] batch={o.BatchSize}x{o.SequenceLength}");
            var trainerOptions = o.ToTrainerOptions();
            (trainerOptions.Seed, trainerOptions.BaseMeta, trainerOptions.Progress) = (seed, baseMeta, new LogProgress(ch, o.Progress));
            var trainer = new LoopedLmTrainer(trainerOptions);
            var result = trainer.Train(lm, source, stages, o.CancellationToken);
            ch.Info(MessageSensitivity.None, $"LoopRpt train: completed={result.Completed} global_step={result.GlobalStep} tokens={result.TokensSeen} rows_read={source.RowsRead}");

            var meta = result.Meta.Clone();
            if (o.ModelDirectory is { } dir)
            {
                ModelDirectory.Save(dir, lm, meta);
                ch.Info(MessageSensitivity.None, $"LoopRpt train: model saved to {Path.GetFullPath(dir)}");
            }
            var engine = new ScoringEngine(lm, scorerOptions.ExitMode, scorerOptions.BatchSize, Math.Min(scorerOptions.ContextLength, lm.Config.MaxPositionEmbeddings), scorerOptions.PerStepStatistics);
            return new AdaptiveExitScoringTransformer(_ml, engine, meta, scorerOptions, o.Scorer.Device ?? deviceName, fallback, result);
        }
        catch
        {
            lm.Dispose();
            throw;
        }
        finally
        {
            foreach (var stage in stages) stage.Objective.Dispose();
        }
    }

    private static long FirstBatchOfStep(long step, long[] steps, IList<StageDescriptor> plan)
    {
        long index = 0, remaining = Math.Max(0, step);
        for (int i = 0; i < plan.Count && remaining > 0; i++)
        {
            long take = Math.Min(remaining, steps[i]);
            index += take * plan[i].GradientAccumulation;
            remaining -= take;
        }
        return index + remaining;
    }

    private static int InferVocabulary(IDataView input, Microsoft.ML.DataViewSchema.Column column)
    {
        int max = -1;
        using var cursor = input.GetRowCursor([column]);
        var getter = SchemaChecks.TokenGetter(cursor, column);
        int[]? ids = null;
        long rows = 0;
        while (cursor.MoveNext())
        {
            rows++;
            getter(ref ids);
            if (ids is null) continue;
            foreach (var id in ids)
            {
                if (id < 0) throw new InvalidOperationException($"Column '{column.Name}' holds a negative token id ({id}) in row {rows - 1}.");
                max = Math.Max(max, id);
            }
        }
        if (rows == 0) throw new InvalidOperationException($"Cannot train: the input has no rows (column '{column.Name}', empty data).");
        if (max < 0) throw new InvalidOperationException($"Cannot train: column '{column.Name}' holds no tokens in any of its {rows} rows (all texts empty?).");
        return max + 1;
    }

    /// <inheritdoc/>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.Tokens(inputSchema, _options.TokenColumnName);
        return Twin.ScorerEstimator(_ml, _options.TokenColumnName, _options.Scorer.OutputColumnPrefix, "{}").GetOutputSchema(inputSchema);
    }

    /// <summary>Writes each report to MLContext.Log (one parseable line) and forwards it.</summary>
    private sealed class LogProgress(IChannel channel, IProgress<TrainingProgress>? inner) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value)
        {
            channel.Info(MessageSensitivity.None, "LoopRpt progress: " + value);
            inner?.Report(value);
        }
    }
}
