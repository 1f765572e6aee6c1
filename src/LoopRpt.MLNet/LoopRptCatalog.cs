using LoopRpt.Evaluation;
using LoopRpt.Model;
using LoopRpt.Tokenization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.MLNet;

/// <summary>
/// Every LoopRpt ML.NET component: <c>mlContext.LoopRpt().Tokenize(...)</c>, <c>.TrainLoopedLm(...)</c>,
/// <c>.ScoreWithModel(...)</c>, <c>.Evaluate(...)</c>, <c>.ParetoSweep(...)</c>. Each factory has a simple overload and one
/// taking the component's options. The catalog keeps the <see cref="MLContext"/> (its log, seed, GPU settings).
/// </summary>
public sealed class LoopRptCatalog
{
    internal LoopRptCatalog(MLContext mlContext) => MLContext = mlContext ?? throw new ArgumentNullException(nameof(mlContext));

    /// <summary>The context this catalog builds components for.</summary>
    public MLContext MLContext { get; }

    /// <summary>Tokenizes <paramref name="inputColumnName"/> with a byte-level BPE vocabulary learned at fit time.</summary>
    /// <param name="outputColumnName">Token-id vector column to create.</param>
    /// <param name="inputColumnName">Text column (default: <paramref name="outputColumnName"/>).</param>
    /// <param name="vocabularySize">Vocabulary size to learn (special tokens and 256 bytes included).</param>
    /// <param name="addBos">Prepend the beginning/end-of-text id.</param>
    /// <param name="addEos">Append the end-of-text id.</param>
    /// <param name="maxLength">Longest output (0: unlimited; longer texts keep their start).</param>
    public TokenizingEstimator Tokenize(string outputColumnName = TokenizingEstimator.Options.Defaults.OutputColumnName, string? inputColumnName = null,
                                        int vocabularySize = TokenizingEstimator.Options.Defaults.VocabularySize, bool addBos = TokenizingEstimator.Options.Defaults.AddBos,
                                        bool addEos = TokenizingEstimator.Options.Defaults.AddEos, int maxLength = 0)
        => Tokenize(new TokenizingEstimator.Options
        {
            OutputColumnName = outputColumnName, InputColumnName = inputColumnName ?? outputColumnName, VocabularySize = vocabularySize,
            AddBos = addBos, AddEos = addEos, MaxLength = maxLength,
        });

    /// <summary>Tokenizes with a pretrained tiktoken encoding: gpt2 (default), cl100k_base, o200k_base.</summary>
    public TokenizingEstimator TokenizePretrained(string outputColumnName = TokenizingEstimator.Options.Defaults.OutputColumnName, string? inputColumnName = null,
                                                  string encoding = TokenizingEstimator.Options.Defaults.TiktokenEncoding, bool addBos = TokenizingEstimator.Options.Defaults.AddBos,
                                                  bool addEos = TokenizingEstimator.Options.Defaults.AddEos, int maxLength = 0)
        => Tokenize(new TokenizingEstimator.Options
        {
            OutputColumnName = outputColumnName, InputColumnName = inputColumnName ?? outputColumnName, Source = TokenizerSource.Tiktoken,
            TiktokenEncoding = encoding, AddBos = addBos, AddEos = addEos, MaxLength = maxLength,
        });

    /// <summary>Tokenizes as <paramref name="options"/> says (any source: trained BPE, tiktoken, BPE files, SentencePiece, an existing tokenizer).</summary>
    public TokenizingEstimator Tokenize(TokenizingEstimator.Options options) => new(MLContext, options);

    /// <summary>Trains a looped LM on a token column: Stage I pretraining then Stage II gate training.</summary>
    /// <param name="tokenColumnName">Token-id vector column.</param>
    /// <param name="preset">Model preset: tiny, small, ouro-1.4b, ouro-2.6b.</param>
    /// <param name="pretrainSteps">Stage I steps.</param>
    /// <param name="gateSteps">Stage II steps (0: none).</param>
    /// <param name="batchSize">Sequences per batch.</param>
    /// <param name="sequenceLength">Tokens per sequence.</param>
    public LoopedLmTrainerEstimator TrainLoopedLm(string tokenColumnName = LoopedLmTrainerEstimator.Options.Defaults.TokenColumnName,
                                                  string preset = LoopedLmTrainerEstimator.Options.Defaults.Preset,
                                                  long pretrainSteps = LoopedLmTrainerEstimator.Options.Defaults.PretrainSteps,
                                                  long gateSteps = LoopedLmTrainerEstimator.Options.Defaults.GateSteps,
                                                  int batchSize = LoopedLmTrainerEstimator.Options.Defaults.BatchSize,
                                                  int sequenceLength = LoopedLmTrainerEstimator.Options.Defaults.SequenceLength)
    {
        var stages = new List<StageDescriptor> { StageDescriptor.Pretrain(pretrainSteps) };
        if (gateSteps > 0) stages.Add(StageDescriptor.Gate(gateSteps));
        return TrainLoopedLm(new LoopedLmTrainerEstimator.Options
        {
            TokenColumnName = tokenColumnName, Preset = preset, Stages = stages, BatchSize = batchSize, SequenceLength = sequenceLength,
        });
    }

    /// <summary>Trains a looped LM as <paramref name="options"/> says (model, stages, device, checkpoints, progress, cancellation).</summary>
    public LoopedLmTrainerEstimator TrainLoopedLm(LoopedLmTrainerEstimator.Options options) => new(MLContext, options);

    /// <summary>
    /// Trains on a text column: the tokenizer (<paramref name="tokenizer"/>, default a 1024-token BPE learned from the
    /// text) followed by the trainer reading its output column. Fitting returns tokenizer + scorer.
    /// </summary>
    public EstimatorChain<AdaptiveExitScoringTransformer> TrainLoopedLmOnText(string textColumnName, LoopedLmTrainerEstimator.Options? options = null, TokenizingEstimator.Options? tokenizer = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(textColumnName);
        var t = tokenizer?.Clone() ?? new TokenizingEstimator.Options();
        t.InputColumnName = textColumnName;
        var o = options?.Clone() ?? new LoopedLmTrainerEstimator.Options();
        o.TokenColumnName = t.OutputColumnName;
        return Tokenize(t).Append(TrainLoopedLm(o));
    }

    /// <summary>Scores with an existing LoopRpt model directory (an estimator that loads rather than trains).</summary>
    /// <param name="modelDirectory">A LoopRpt model directory (config.json, model.safetensors, meta.json).</param>
    /// <param name="tokenColumnName">Token-id vector column.</param>
    /// <param name="exitThreshold">Q-exit threshold q in [0, 1]; 1 means always the last step.</param>
    public AdaptiveExitScoringEstimator ScoreWithModel(string modelDirectory, string tokenColumnName = AdaptiveExitScoringTransformer.Options.Defaults.TokenColumnName,
                                                       double exitThreshold = AdaptiveExitScoringTransformer.Options.Defaults.ExitThreshold)
        => ScoreWithModel(new AdaptiveExitScoringTransformer.Options { ModelDirectory = modelDirectory, TokenColumnName = tokenColumnName, ExitMode = ExitMode.Q(exitThreshold) });

    /// <summary>Scores with an existing LoopRpt model directory as <paramref name="options"/> says.</summary>
    public AdaptiveExitScoringEstimator ScoreWithModel(AdaptiveExitScoringTransformer.Options options) => new(MLContext, options);

    /// <summary>Loads a scorer directly from a model directory (no pipeline needed).</summary>
    public AdaptiveExitScoringTransformer LoadScorer(AdaptiveExitScoringTransformer.Options options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _ = new AdaptiveExitScoringEstimator(MLContext, options);     // validates options and the directory
        return AdaptiveExitScoringEstimator.Load(MLContext, options.Clone());
    }

    /// <summary>
    /// Feature vectors from an existing LoopRpt model directory: each row's pooled exit-state embedding as a
    /// Vector&lt;Single&gt; of known length, for any ML.NET trainer (<see cref="LoopRptFeaturizingTransformer"/>).
    /// </summary>
    /// <param name="modelDirectory">A LoopRpt model directory (config.json, model.safetensors, meta.json).</param>
    /// <param name="outputColumnName">Feature column to create.</param>
    /// <param name="tokenColumnName">Token-id vector column.</param>
    /// <param name="exitThreshold">Q-exit threshold q in [0, 1]; 1 means full depth.</param>
    public LoopRptFeaturizingEstimator Featurize(string modelDirectory, string outputColumnName = LoopRptFeaturizingEstimator.Options.Defaults.OutputColumnName,
                                                 string tokenColumnName = AdaptiveExitScoringTransformer.Options.Defaults.TokenColumnName,
                                                 double exitThreshold = AdaptiveExitScoringTransformer.Options.Defaults.ExitThreshold)
        => Featurize(new LoopRptFeaturizingEstimator.Options
        {
            ModelDirectory = modelDirectory, OutputColumnName = outputColumnName, TokenColumnName = tokenColumnName, ExitThreshold = exitThreshold,
        });

    /// <summary>Feature vectors from an existing LoopRpt model directory as <paramref name="options"/> say.</summary>
    public LoopRptFeaturizingEstimator Featurize(LoopRptFeaturizingEstimator.Options options) => new(MLContext, options);

    /// <summary>
    /// A featurizer sharing the model of a fitted scorer (for example the one <see cref="TrainLoopedLm(LoopedLmTrainerEstimator.Options)"/>
    /// returned); it reads the scorer's token column and uses its exit rule and batch size. The scorer keeps owning the model.
    /// </summary>
    public LoopRptFeaturizingTransformer Featurize(AdaptiveExitScoringTransformer scorer, string outputColumnName = LoopRptFeaturizingEstimator.Options.Defaults.OutputColumnName)
    {
        ArgumentNullException.ThrowIfNull(scorer);
        if (scorer.ExitMode.Kind == ExitKind.ExpectedLogits)
            throw new ArgumentOutOfRangeException(nameof(scorer), "The scorer reads out expected logits, which have no single exit state to pool; use a Q-exit, fixed or last-step scorer.");
        var options = new LoopRptFeaturizingEstimator.Options { TokenColumnName = scorer.TokenColumnName, OutputColumnName = outputColumnName, ModelDirectory = scorer.ModelDirectory };
        options.Validate();
        return new LoopRptFeaturizingTransformer(MLContext, scorer, options, ownsScorer: false);
    }

    /// <summary>
    /// Next-token accuracy overall and per loop step, mean exit step, compute fraction, NLL, and entropy buckets, from the
    /// scorer's output columns, reduced by the same evaluation core as <c>looprpt evaluate</c> (src/LoopRpt/Evaluation).
    /// </summary>
    /// <param name="scoredData">Output of a LoopRpt scorer (or of a model reloaded with ml.Model.Load).</param>
    /// <param name="outputColumnPrefix">The scorer's <see cref="AdaptiveExitScoringTransformer.Options.OutputColumnPrefix"/>.</param>
    /// <param name="buckets">
    /// The nested All ⊇ Easy ⊇ Medium ⊇ Hard buckets, by the scored model's entropy at its exit: default the method's
    /// thresholds (<see cref="EntropyBuckets.Published"/>, 0.5 / 1 / 1.5 nats), or <see cref="EntropyBuckets.TopFractions"/>
    /// / <see cref="EntropyBuckets.Parse"/> (e.g. <c>top:50,30,20</c>) for the highest-entropy shares of the tokens. With the
    /// scorer's exit rule <see cref="ExitMode.Last"/> these are exactly the buckets of <c>looprpt evaluate</c> without
    /// <c>--base-model</c>.
    /// </param>
    /// <param name="entropyBucketEdges">
    /// Instead, disjoint buckets: increasing edges in nats, e.g. [0.5, 2] gives H &lt; 0.5, 0.5 ≤ H &lt; 2 and H ≥ 2. Not
    /// with <paramref name="buckets"/>.
    /// </param>
    public LoopRptMetrics Evaluate(IDataView scoredData, string outputColumnPrefix = "", EntropyBuckets? buckets = null, double[]? entropyBucketEdges = null)
        => ScoredDataEvaluator.Evaluate(scoredData, outputColumnPrefix ?? "", buckets, entropyBucketEdges);

    /// <summary>
    /// Accuracy, NLL and compute for each Q-exit threshold (default <see cref="LoopEvaluationOptions.Defaults.QValues"/>,
    /// as <c>looprpt pareto</c>), marking the Pareto-optimal points (no other point is at least as accurate with no more
    /// compute). The rows are windowed as the scorer windows them and evaluated by <see cref="LoopEvaluator"/>:
    /// <paramref name="pass"/> <see cref="EvaluationPass.FullDepth"/> (default) runs every loop once and selects each q's
    /// exit; <see cref="EvaluationPass.Adaptive"/> runs the compute-saving scorer once per q.
    /// </summary>
    public IReadOnlyList<ParetoPoint> ParetoSweep(AdaptiveExitScoringTransformer scorer, IDataView data, IEnumerable<double>? thresholds = null,
                                                  EvaluationPass pass = EvaluationPass.FullDepth)
        => ScoredDataEvaluator.Pareto(scorer, data, thresholds ?? LoopEvaluationOptions.Defaults.QValues, pass);

    /// <summary>Trains a byte-level BPE tokenizer on texts outside a pipeline.</summary>
    public LoopRptTokenizer TrainTokenizer(IEnumerable<string?> texts, ByteLevelBpeTrainerOptions? options = null) => LoopRptTokenizer.Train(texts, options);
}
