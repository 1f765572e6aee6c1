// The consumption half of a Model Builder-style model class (Model Builder writes <Name>.consumption.cs):
// input/output classes, a lazily created prediction engine over the saved zip, and Predict.
using Microsoft.ML;
using Microsoft.ML.Data;

namespace ModelBuilderStyle;

/// <summary>A looped language model (LoopRpt) trained and consumed the way ML.NET Model Builder's generated code does it.</summary>
public partial class LoopedLmModel
{
    /// <summary>Model input class for LoopedLmModel: one text per row (column 0 of the training TSV).</summary>
    #region model input class
    public class ModelInput
    {
        /// <summary>The text to score.</summary>
        [LoadColumn(0)]
        [ColumnName(@"Text")]
        public string Text { get; set; } = "";
    }
    #endregion

    /// <summary>
    /// Model output class for LoopedLmModel: the pipeline's output columns (the normalized text, its tokens and the
    /// adaptive-exit scorer's columns; docs/mlnet.md, "Scorer").
    /// </summary>
    #region model output class
    public class ModelOutput
    {
        /// <summary>The text after NormalizeText (lower case, as the model saw it).</summary>
        [ColumnName(@"Text")]
        public string Text { get; set; } = "";

        /// <summary>Token ids (BOS first).</summary>
        [ColumnName(@"Tokens")]
        public int[] Tokens { get; set; } = [];

        /// <summary>Sum of log p(token) over the predicted tokens 1..n-1.</summary>
        [ColumnName(@"LogLikelihood")]
        public float LogLikelihood { get; set; }

        /// <summary>log p of each predicted token at its exit step (n-1 values).</summary>
        [ColumnName(@"TokenLogProbabilities")]
        public float[] TokenLogProbabilities { get; set; } = [];

        /// <summary>1-indexed loop step at which each predicted token exited (n-1 values).</summary>
        [ColumnName(@"ExitSteps")]
        public float[] ExitSteps { get; set; } = [];

        /// <summary>Mean of <see cref="ExitSteps"/> (NaN for a row with no predicted token).</summary>
        [ColumnName(@"MeanExitStep")]
        public float MeanExitStep { get; set; }

        /// <summary>exp(-LogLikelihood / TokenCount) (NaN for a row with no predicted token).</summary>
        [ColumnName(@"Perplexity")]
        public float Perplexity { get; set; }

        /// <summary>MeanExitStep / loops: loop compute relative to full depth.</summary>
        [ColumnName(@"ComputeFraction")]
        public float ComputeFraction { get; set; }

        /// <summary>Entropy (nats) of the next-token distribution at each token's exit.</summary>
        [ColumnName(@"TokenEntropies")]
        public float[] TokenEntropies { get; set; } = [];

        /// <summary>1 where the exit's argmax is the next token, else 0.</summary>
        [ColumnName(@"Correct")]
        public float[] Correct { get; set; } = [];

        /// <summary>Per loop step, how many of the row's tokens that step's argmax predicts.</summary>
        [ColumnName(@"StepCorrectCounts")]
        public float[] StepCorrectCounts { get; set; } = [];   // empty unless the scorer runs with PerStepStatistics = true

        /// <summary>Predicted tokens in the row (n-1, or 0).</summary>
        [ColumnName(@"TokenCount")]
        public int TokenCount { get; set; }
    }
    #endregion

    /// <summary>
    /// The model file <see cref="Predict"/> loads. Model Builder fixes it to the file next to the application; set it
    /// before the first <see cref="Predict"/> to use another (the engine is created once).
    /// </summary>
    public static string MLNetModelPath { get; set; } = Path.GetFullPath("LoopedLmModel.zip");

    /// <summary>The prediction engine, created on first use from <see cref="MLNetModelPath"/>.</summary>
    public static readonly Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine = new(() => CreatePredictEngine(), true);

    /// <summary>Scores one text with the model in <see cref="MLNetModelPath"/>.</summary>
    /// <param name="input">The text.</param>
    /// <returns>Its log-likelihood, perplexity, exit steps and the other scorer columns.</returns>
    public static ModelOutput Predict(ModelInput input)
    {
        var predEngine = PredictEngine.Value;
        return predEngine.Predict(input);
    }

    private static PredictionEngine<ModelInput, ModelOutput> CreatePredictEngine()
    {
        if (!File.Exists(MLNetModelPath))
            throw new FileNotFoundException($"Model file '{MLNetModelPath}' not found: train one with LoopedLmModel.Train or set LoopedLmModel.MLNetModelPath.", MLNetModelPath);
        var mlContext = new MLContext();
        ITransformer mlModel = mlContext.Model.Load(MLNetModelPath, out var _);
        return mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(mlModel);
    }
}
