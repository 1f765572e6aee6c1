using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace LoopRpt.Tests.MLNet;

/// <summary>
/// ml.Model.Save in this process, ml.Model.Load in a brand-new one (`dotnet LoopRpt.Tests.dll cold-score`, running
/// <see cref="ColdProcessChild.ScoreZip"/>): the scores must agree within <see cref="Tolerance"/> (another process may
/// run libtorch's kernels with another thread count and blocking, which rounds the last bits differently on some
/// CPUs), and row counts and vector lengths exactly. The child touches no LoopRpt type before Model.Load, so ML.NET
/// itself must find the CustomMapping factories by contract name.
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
                .Append(ml.LoopRpt().TrainLoopedLm(new LoopRpt.MLNet.LoopedLmTrainerEstimator.Options
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
            var psi = new ProcessStartInfo("dotnet", [dll, ColdProcessChild.Verb, zip, tsv])
            {
                RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
            };
            using var child = Process.Start(psi)!;
            var stdout = child.StandardOutput.ReadToEndAsync();
            var stderr = child.StandardError.ReadToEndAsync();
            // All tensor work is done above; only the child process is awaited.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            await child.WaitForExitAsync(timeout.Token);
            var result = Path.Combine(work, "model.zip.scores.txt");
            Assert.True(child.ExitCode == 0 && File.Exists(result), $"child exit {child.ExitCode}: {await stdout}\n{await stderr}");
            var want = ColdProcessChild.Parse(expected);
            var got = ColdProcessChild.Parse(File.ReadAllText(result));
            Assert.Equal(want.Length, got.Length);
            for (int row = 0; row < want.Length; row++)
                for (int field = 0; field < 3; field++)
                    Tolerance.AssertClose(want[row][field], got[row][field], $"row {row} field {field}");
        }
        finally
        {
            MlNetTestData.Delete(work);
        }
    }
}

/// <summary>
/// The child process of <see cref="ColdProcessTests"/>, entered through <see cref="ChildProcess.Main"/>. Not a test:
/// as a [Fact] it would pass in every normal run while checking nothing.
/// </summary>
public static class ColdProcessChild
{
    public const string Verb = "cold-score";

    public sealed class TextRow
    {
        [LoadColumn(0)] public string Text { get; set; } = "";
    }

    /// <summary>Loads the zip, scores the TSV and writes <see cref="Format"/> to ZIP.scores.txt.</summary>
    public static void ScoreZip(string zip, string data)
    {
        var ml = new MLContext(seed: 42);
        var model = ml.Model.Load(zip, out _);
        var scored = model.Transform(ml.Data.LoadFromTextFile<TextRow>(data, hasHeader: true));
        File.WriteAllText(zip + ".scores.txt", Format(scored));
    }

    /// <summary>Every score bit-exactly (float bits in hex), row by row: LogLikelihood | TokenLogProbabilities | ExitSteps.</summary>
    public static string Format(IDataView scored)
    {
        static string Bits(float f) => BitConverter.SingleToInt32Bits(f).ToString("x8");
        var ll = scored.GetColumn<float>("LogLikelihood").ToArray();
        var lp = scored.GetColumn<float[]>("TokenLogProbabilities").ToArray();
        var ex = scored.GetColumn<float[]>("ExitSteps").ToArray();
        return string.Join("\n", ll.Select((v, i) => $"{Bits(v)} | {string.Join(",", (lp[i] ?? []).Select(Bits))} | {string.Join(",", (ex[i] ?? []).Select(Bits))}"));
    }

    /// <summary>Inverse of <see cref="Format"/>: per row, the three fields as float arrays.</summary>
    public static float[][][] Parse(string formatted)
        => formatted.Split('\n').Select(line => line.Split(" | ").Select(field => field.Length == 0 ? [] : field.Split(',')
            .Select(h => BitConverter.Int32BitsToSingle(int.Parse(h, System.Globalization.NumberStyles.HexNumber))).ToArray()).ToArray()).ToArray();
}
