using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

/// <summary>
/// ml.Model.Save in this process, ml.Model.Load in a brand-new one (a child `dotnet test` of this assembly running
/// <see cref="ColdProcessChild.ScoreZip"/>): the scores must be bitwise identical. The child touches no LoopRpt type
/// before Model.Load, so ML.NET itself must find the CustomMapping factories by contract name.
/// </summary>
public class ColdProcessTests
{
    [Fact]
    public async Task SavedPipelineScoresIdenticallyInAFreshProcess()
    {
        var work = MlNetTestData.TempDir("cold");
        Directory.CreateDirectory(work);
        try
        {
            var ml = new MLContext(seed: 1);
            var train = ml.Data.LoadFromEnumerable(MlNetTestData.Docs(60, 1));
            var pipeline = ml.Transforms.Text.NormalizeText("Text")
                .Append(ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 290))
                .Append(ml.LoopRpt().TrainLoopedLm(new LoopRpt.MLNet.LoopedLmTrainerOptions
                {
                    Config = MlNetTestData.TinyConfig(1), BatchSize = 4, SequenceLength = 32, Seed = 1,
                    Stages = [LoopRpt.MLNet.StageDescriptor.Pretrain(4, 1e-2), LoopRpt.MLNet.StageDescriptor.Gate(2, 1e-2)],
                }));
            var test = MlNetTestData.Docs(8, 5);
            var tsv = Path.Combine(work, "test.tsv");
            File.WriteAllLines(tsv, ["Text", .. test.Select(d => d.Text)]);
            var zip = Path.Combine(work, "model.zip");
            string expected;
            using (var model = pipeline.Fit(train))
            {
                ml.Model.Save(model, train.Schema, zip);
                var scored = model.Transform(ml.Data.LoadFromTextFile<Doc>(tsv, hasHeader: true));
                expected = ColdProcessChild.Format(scored);
            }

            var dll = typeof(ColdProcessTests).Assembly.Location;
            var psi = new ProcessStartInfo("dotnet", ["test", dll, "--filter", "FullyQualifiedName=LoopRpt.Tests.MLNet.ColdProcessChild.ScoreZip"])
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            psi.Environment[ColdProcessChild.ZipVariable] = zip;
            psi.Environment[ColdProcessChild.DataVariable] = tsv;
            using var child = Process.Start(psi)!;
            var stdout = child.StandardOutput.ReadToEndAsync();
            var stderr = child.StandardError.ReadToEndAsync();
            // All tensor work is done above; only the child process is awaited.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            await child.WaitForExitAsync(timeout.Token);
            var result = Path.Combine(work, "model.zip.scores.txt");
            Assert.True(File.Exists(result), $"child exit {child.ExitCode}: {await stdout}\n{await stderr}");
            Assert.Equal(expected, File.ReadAllText(result));
        }
        finally
        {
            MlNetTestData.Delete(work);
        }
    }
}

/// <summary>Runs only inside the child process started by <see cref="ColdProcessTests"/> (no-op otherwise).</summary>
public class ColdProcessChild
{
    public const string ZipVariable = "LOOPRPT_COLD_ZIP";
    public const string DataVariable = "LOOPRPT_COLD_DATA";

    public sealed class TextRow
    {
        [LoadColumn(0)] public string Text { get; set; } = "";
    }

    [Fact]
    public void ScoreZip()
    {
        var zip = Environment.GetEnvironmentVariable(ZipVariable);
        var data = Environment.GetEnvironmentVariable(DataVariable);
        if (zip is null || data is null) return;
        var ml = new MLContext(seed: 42);
        var model = ml.Model.Load(zip, out _);
        var scored = model.Transform(ml.Data.LoadFromTextFile<TextRow>(data, hasHeader: true));
        File.WriteAllText(zip + ".scores.txt", Format(scored));
    }

    /// <summary>Every score bit-exactly (float bits in hex), row by row.</summary>
    public static string Format(IDataView scored)
    {
        static string Bits(float f) => BitConverter.SingleToInt32Bits(f).ToString("x8");
        var ll = scored.GetColumn<float>("LogLikelihood").ToArray();
        var lp = scored.GetColumn<float[]>("TokenLogProbabilities").ToArray();
        var ex = scored.GetColumn<float[]>("ExitSteps").ToArray();
        return string.Join("\n", ll.Select((v, i) => $"{Bits(v)} | {string.Join(",", (lp[i] ?? []).Select(Bits))} | {string.Join(",", (ex[i] ?? []).Select(Bits))}"));
    }
}
