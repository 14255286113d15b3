// Reads the config file after checking that only root could have written it.
import LoginChrootCore
import LoginChrootPlatform

public enum ConfigLoader {
    public static func load(_ path: String) throws -> Config {
        guard Files.exists(path) else {
            throw ConfigError(file: path, line: 0, problem: "config file does not exist",
                              fix: "create it; see loginchroot.conf(5) and doc/loginchroot.conf.example")
        }
        do {
            try Files.checkOwnedByRoot(path, kind: "config file")
        } catch let error as SetupError {
            throw ConfigError(file: path, line: 0, problem: error.problem, fix: error.fix)
        }
        let directory = parentDirectory(of: path)
        do {
            try Files.checkOwnedByRoot(directory, kind: "config directory")
        } catch let error as SetupError {
            // Never "chmod go-w /tmp": the file moves, the directory stays.
            throw ConfigError(file: path, line: 0, problem: error.problem,
                              fix: "move \(path) into a directory that only root can write, such as /etc/loginchroot; leave \(directory) as it is")
        }
        return try ConfigParser.parse(try Files.read(path), file: path)
    }
}
