// The training half of a Model Builder-style model class (Model Builder writes <Name>.training.cs): the pipeline,
// retraining on an IDataView, and saving. The hyperparameters are constants, as Model Builder writes them; they are
// tiny so that the example trains in seconds on a CPU.
using LoopRpt.MLNet;
using LoopRpt.Model;
using Microsoft.ML;

namespace ModelBuilderStyle;

public partial class LoopedLmModel
{
    /// <summary>Training data file used by <see cref="Train"/> when no other is given (a TSV with a header and a Text column).</summary>
    public const string RetrainFilePath = "corpus.tsv";
    /// <summary>Column separator of the training file.</summary>
    public const char RetrainSeparatorChar = '\t';
    /// <summary>Whether the training file has a header row.</summary>
    public const bool RetrainHasHeader = true;
    /// <summary>Whether the training file quotes fields.</summary>
    public const bool RetrainAllowQuoting = false;

    /// <summary>Size of the byte-level BPE vocabulary learned from the training texts (256 bytes + specials + merges).</summary>
    public const int VocabularySize = 320;
    /// <summary>Model shape preset (docs/mlnet.md, "Trainer").</summary>
    public const string Preset = "tiny";
    /// <summary>Ouro Stage I optimizer steps.</summary>
    public const int PretrainSteps = 40;
    /// <summary>Ouro Stage II (exit gate) optimizer steps.</summary>
    public const int GateSteps = 10;
    /// <summary>Sequences per optimizer step.</summary>
    public const int BatchSize = 8;
    /// <summary>Tokens per training sequence.</summary>
    public const int SequenceLength = 32;
    /// <summary>Q-exit threshold of the scorer: a token exits at the first loop step whose cumulative exit probability reaches it.</summary>
    public const double ExitThreshold = 0.5;
    /// <summary>Trainer seed (training is deterministic on CPU for a seed).</summary>
    public const int Seed = 1;

    /// <summary>Trains a model on the text file and saves it to <paramref name="outputModelPath"/>.</summary>
    /// <param name="outputModelPath">Where the model zip goes.</param>
    /// <param name="inputDataFilePath">Training texts, one per row (column 0).</param>
    /// <param name="separatorChar">Column separator.</param>
    /// <param name="hasHeader">Whether the file has a header row.</param>
    /// <param name="allowQuoting">Whether fields may be quoted.</param>
    public static void Train(string outputModelPath, string inputDataFilePath = RetrainFilePath, char separatorChar = RetrainSeparatorChar, bool hasHeader = RetrainHasHeader, bool allowQuoting = RetrainAllowQuoting)
    {
        var mlContext = new MLContext(seed: Seed);

        var data = LoadIDataViewFromFile(mlContext, inputDataFilePath, separatorChar, hasHeader, allowQuoting);
        var model = RetrainModel(mlContext, data);
        try
        {
            SaveModel(mlContext, model, data, outputModelPath);
        }
        finally
        {
            (model as IDisposable)?.Dispose();                 // the trained LM holds native tensors
        }
    }

    /// <summary>Loads the training file as an IDataView of <see cref="ModelInput"/>.</summary>
    /// <param name="mlContext">The ML.NET context.</param>
    /// <param name="inputDataFilePath">The file.</param>
    /// <param name="separatorChar">Column separator.</param>
    /// <param name="hasHeader">Whether the file has a header row.</param>
    /// <param name="allowQuoting">Whether fields may be quoted.</param>
    /// <returns>The data view (lazy).</returns>
    public static IDataView LoadIDataViewFromFile(MLContext mlContext, string inputDataFilePath, char separatorChar, bool hasHeader, bool allowQuoting)
    {
        if (!File.Exists(inputDataFilePath))
            throw new FileNotFoundException($"Training data file '{inputDataFilePath}' not found.", inputDataFilePath);
        return mlContext.Data.LoadFromTextFile<ModelInput>(inputDataFilePath, separatorChar, hasHeader, allowQuoting: allowQuoting);
    }

    /// <summary>Saves the model with the input schema of <paramref name="data"/> (what <c>ml.Model.Load</c> reports back).</summary>
    /// <param name="mlContext">The ML.NET context.</param>
    /// <param name="model">The trained model.</param>
    /// <param name="data">Data with the model's input schema.</param>
    /// <param name="modelSavePath">Where the zip goes (its folder is created if missing).</param>
    public static void SaveModel(MLContext mlContext, ITransformer model, IDataView data, string modelSavePath)
    {
        DataViewSchema dataViewSchema = data.Schema;
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelSavePath));
        if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
        using var fs = File.Create(modelSavePath);
        mlContext.Model.Save(model, dataViewSchema, fs);
    }

    /// <summary>Fits <see cref="BuildPipeline"/> on <paramref name="trainData"/>.</summary>
    /// <param name="mlContext">The ML.NET context.</param>
    /// <param name="trainData">Rows with a Text column.</param>
    /// <returns>The trained model (normalizer + tokenizer + scorer); dispose it when done.</returns>
    public static ITransformer RetrainModel(MLContext mlContext, IDataView trainData)
    {
        var pipeline = BuildPipeline(mlContext);
        var model = pipeline.Fit(trainData);

        return model;
    }

    /// <summary>
    /// The training pipeline: normalize the text, learn a byte-level BPE vocabulary and tokenize, then train a looped LM
    /// (Ouro Stage I, then Stage II for the exit gate) whose transformer scores texts with adaptive exits.
    /// </summary>
    /// <param name="mlContext">The ML.NET context.</param>
    /// <returns>The untrained pipeline.</returns>
    public static IEstimator<ITransformer> BuildPipeline(MLContext mlContext)
    {
        var pipeline = mlContext.Transforms.Text.NormalizeText(@"Text", @"Text")
                                .Append(mlContext.LoopRpt().Tokenize(@"Tokens", @"Text", vocabularySize: VocabularySize))
                                .Append(mlContext.LoopRpt().TrainLoopedLm(new LoopedLmTrainerEstimator.Options()
                                {
                                    TokenColumnName = @"Tokens",
                                    Preset = Preset,
                                    BatchSize = BatchSize,
                                    SequenceLength = SequenceLength,
                                    Stages = [StageDescriptor.Pretrain(PretrainSteps, 3e-3), StageDescriptor.Gate(GateSteps, 1e-2)],
                                    Seed = Seed,
                                    LogEvery = PretrainSteps,
                                    Scorer = new AdaptiveExitScoringTransformer.Options() { ExitMode = ExitMode.Q(ExitThreshold), Storage = ModelStorage.Embedded },
                                }));

        return pipeline;
    }
}
