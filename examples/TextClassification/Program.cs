// Classifier comparison: which Vim help file does a paragraph come from? (docs/serving.md, "ML.NET featurizer")
// Real text with natural labels, available offline on every machine of this kind: /usr/share/vim/vim90/doc.
// One run trains a small looped LM on the training paragraphs (no labels), then fits the same SDCA maximum-entropy
// classifier on three feature sets and reports accuracy and macro-F1 on held-out paragraphs:
//   1. ML.NET's FeaturizeText (word and character n-grams)   2. LoopRpt's pooled exit-state features   3. both concatenated.
// Usage: dotnet run -c Release --project examples/TextClassification [-- --docs DIR --files a.txt,b.txt --per-class N --steps N --threads N --q Q]
using System.Diagnostics;
using System.Globalization;
using LoopRpt.MLNet;
using LoopRpt.Model;
using Microsoft.ML;
using Microsoft.ML.Data;

var settings = Args.Parse(args);
TorchSharp.torch.set_num_threads(settings.Threads);
var clock = Stopwatch.StartNew();
var (train, test) = Corpus.Load(settings.Docs, settings.Files, settings.PerClass, seed: 7);
Console.WriteLine($"data: {train.Count} training and {test.Count} held-out paragraphs from {string.Join(", ", settings.Files)} ({settings.Docs})");

var ml = new MLContext(seed: 1);
var trainView = ml.Data.LoadFromEnumerable(train);
var testView = ml.Data.LoadFromEnumerable(test);

// The looped LM: BPE tokenizer + Stage I pretraining + gate training on the training paragraphs' text.
var lmOptions = new LoopedLmTrainerEstimator.Options
{
    Preset = "tiny", BatchSize = 16, SequenceLength = 64, Seed = 1,
    Stages = [StageDescriptor.Pretrain(settings.Steps, 3e-3), StageDescriptor.Gate(Math.Max(1, settings.Steps / 5), 3e-3)],
    Scorer = new AdaptiveExitScoringTransformer.Options { ExitMode = ExitMode.Q(settings.Q) },
};
var lm = ml.LoopRpt().TrainLoopedLmOnText("Text", lmOptions, new TokenizingEstimator.Options { VocabularySize = 512, MaxLength = 128 }).Fit(trainView);
var scorer = lm.LastTransformer;
Console.WriteLine($"looped LM: {scorer.Config.HiddenSize} hidden, {scorer.Config.TotalUtSteps} loops, {settings.Steps} + {settings.Steps / 5} steps, {clock.Elapsed.TotalSeconds:F0} s");
using var featurizer = ml.LoopRpt().Featurize(scorer, "LoopFeatures");

// Tokens and LoopRpt features once for both splits (cached: every classifier reads them).
IDataView Prepare(IDataView v) => ml.Data.Cache(featurizer.Transform(lm.Transform(v)));
var trainPrepared = Prepare(trainView);
var testPrepared = Prepare(testView);

var sdca = ml.MulticlassClassification.Trainers.SdcaMaximumEntropy("Label", "Features", maximumNumberOfIterations: 100);
var label = ml.Transforms.Conversion.MapValueToKey("Label", "Source");
var arms = new (string Name, IEstimator<ITransformer> Pipeline)[]
{
    ("FeaturizeText (n-grams)", label.Append(ml.Transforms.Text.FeaturizeText("Features", "Text")).Append(sdca)),
    ($"LoopRpt features (q = {scorer.ExitMode.Threshold.ToString(CultureInfo.InvariantCulture)})", label.Append(ml.Transforms.CopyColumns("Features", "LoopFeatures")).Append(sdca)),
    ("both, concatenated", label.Append(ml.Transforms.Text.FeaturizeText("TextFeatures", "Text"))
        .Append(ml.Transforms.Concatenate("Features", "TextFeatures", "LoopFeatures")).Append(sdca)),
};
Console.WriteLine();
Console.WriteLine("| features | accuracy | macro-F1 |");
Console.WriteLine("|---|---|---|");
foreach (var (name, pipeline) in arms)
{
    var model = pipeline.Fit(trainPrepared);
    var metrics = ml.MulticlassClassification.Evaluate(model.Transform(testPrepared), "Label");
    Console.WriteLine($"| {name} | {metrics.MicroAccuracy:F3} | {MacroF1(metrics.ConfusionMatrix):F3} |");
}
Console.WriteLine($"\n{clock.Elapsed.TotalSeconds:F0} s in all; {test.Count} held-out rows, {settings.Files.Length} classes (majority class: {test.GroupBy(r => r.Source).Max(g => g.Count()) / (double)test.Count:F3}).");

static double MacroF1(ConfusionMatrix m)
{
    double sum = 0;
    for (int c = 0; c < m.NumberOfClasses; c++)
    {
        double p = m.PerClassPrecision[c], r = m.PerClassRecall[c];
        sum += p + r > 0 ? 2 * p * r / (p + r) : 0;
    }
    return sum / m.NumberOfClasses;
}

/// <summary>A paragraph and the help file it came from.</summary>
public sealed class Paragraph
{
    public string Text { get; set; } = "";
    public string Source { get; set; } = "";
}

internal static class Corpus
{
    /// <summary>
    /// Paragraphs (blocks between blank lines, 60–600 characters) of each file, at most <paramref name="perClass"/>
    /// per file, shuffled with a fixed seed and split 80/20 per class.
    /// </summary>
    public static (List<Paragraph> Train, List<Paragraph> Test) Load(string dir, string[] files, int perClass, int seed)
    {
        var rng = new Random(seed);
        var train = new List<Paragraph>();
        var test = new List<Paragraph>();
        foreach (var file in files)
        {
            var path = Path.Combine(dir, file);
            if (!File.Exists(path)) throw new FileNotFoundException($"'{path}' does not exist; pass --docs with a folder that holds {string.Join(", ", files)}.", path);
            var blocks = File.ReadAllText(path).Split(["\n\n", "\r\n\r\n"], StringSplitOptions.RemoveEmptyEntries)
                .Select(b => string.Join(' ', b.Split((char[])['\n', '\r', '\t', ' '], StringSplitOptions.RemoveEmptyEntries)))
                .Where(b => b.Length is >= 60 and <= 600)
                .OrderBy(_ => rng.Next()).Take(perClass).ToList();
            int cut = blocks.Count * 4 / 5;
            train.AddRange(blocks.Take(cut).Select(b => new Paragraph { Text = b, Source = file }));
            test.AddRange(blocks.Skip(cut).Select(b => new Paragraph { Text = b, Source = file }));
        }
        return (train.OrderBy(_ => rng.Next()).ToList(), test);
    }
}

internal sealed record Args(string Docs, string[] Files, int PerClass, long Steps, int Threads, double Q)
{
    public static Args Parse(string[] args)
    {
        var a = new Args("/usr/share/vim/vim90/doc", ["options.txt", "pattern.txt", "windows.txt", "syntax.txt"], 250, 300, 2, 0.5);
        for (int i = 0; i + 1 < args.Length; i += 2)
            a = args[i] switch
            {
                "--docs" => a with { Docs = args[i + 1] },
                "--files" => a with { Files = args[i + 1].Split(',') },
                "--per-class" => a with { PerClass = int.Parse(args[i + 1], CultureInfo.InvariantCulture) },
                "--steps" => a with { Steps = long.Parse(args[i + 1], CultureInfo.InvariantCulture) },
                "--threads" => a with { Threads = int.Parse(args[i + 1], CultureInfo.InvariantCulture) },
                "--q" => a with { Q = double.Parse(args[i + 1], CultureInfo.InvariantCulture) },
                _ => throw new ArgumentException($"Unknown option '{args[i]}'; expected --docs, --files, --per-class, --steps, --threads, --q."),
            };
        return a;
    }
}
